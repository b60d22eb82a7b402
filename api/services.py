"""What the API needs from the running system, as one explicit object handed to the app factory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from citywatch.metrics import Metrics
from citywatch.settings import ApiSettings
from ingest.device_admin import DeviceManager
from store.base import Store


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    ready: bool
    detail: str = ""


@dataclass
class ApiServices:
    store: Store
    metrics: Metrics
    settings: ApiSettings = field(default_factory=ApiSettings)
    # The state of each pipeline component (MQTT client, processor ...) for /readyz; the store is
    # checked by the API itself.
    readiness: Callable[[], list[ComponentStatus]] = list
    # Run by the app's lifespan: the API owns the pipeline's start and stop when it is embedded.
    on_startup: list[Callable[[], None]] = field(default_factory=list)
    on_shutdown: list[Callable[[], None]] = field(default_factory=list)
    # The managed device registry behind /v1/devices (None: that API answers 503).
    devices: DeviceManager | None = None
