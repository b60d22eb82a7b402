"""What the API needs from the running system, as one explicit object handed to the app factory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from api.access.control import AccessControl
from api.alerts.waiter import FeedWaiter
from api.console.config import ConsoleMap
from api.violation_actions import ViolationActions
from core.metrics import Metrics
from core.settings import AlertSettings, ApiSettings
from core.traffic_settings import TrafficSettings
from ingest.device_admin import DeviceManager
from processors.dispatch.board import PlanBoard
from processors.outputs.feed import ViolationFeed
from store.base import Store

if TYPE_CHECKING:
    from api.alerts.webhooks.dispatcher import WebhookDispatcher
    from ingest.geo import GeoTagger
    from processors.cases.service import CaseService
    from processors.indices.service import IndexService
    from store.open311 import Open311Store


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
    # API keys, scopes, rate limits and the audit log; open (no keys) unless the runtime configures it.
    access: AccessControl = field(default_factory=AccessControl.open)
    # Violation state changes for live streams, and webhook subscriptions; None: those routes answer 503.
    feed: ViolationFeed | None = None
    webhooks: WebhookDispatcher | None = None
    alerts: AlertSettings = field(default_factory=AlertSettings)
    feed_waiter: FeedWaiter | None = None
    # The managed device registry behind /v1/devices (None: that API answers 503).
    devices: DeviceManager | None = None
    # What people did about violations (acknowledged, assigned ...): the relational database the runtime
    # opens; in memory only for API instances built in-process by tests and tools.
    violation_actions: ViolationActions = field(default_factory=ViolationActions.in_memory)
    # GET /v1/status: role, events per second and (on Kafka) consumer lag per partition.
    status: Callable[[], dict[str, Any]] = dict
    # Cases behind /v1/cases (None: that API answers 503).
    cases: CaseService | None = None
    # Open311 requests filed on the cases (/open311/v2, docs/cases.md), and the grids, districts and
    # departments their points are tagged with (None: requests are routed by their type alone).
    open311: Open311Store | None = None
    geo: GeoTagger | None = None
    # Dispatch plans made by this instance, with the `dispatch` settings (/v1/dispatch, docs/dispatch.md).
    dispatch: PlanBoard = field(default_factory=PlanBoard)
    # The city's time zone (`traffic.time_zone`): CSV exports add local times in it next to epoch ms.
    time_zone: str = TrafficSettings.model_fields["time_zone"].default
    # Layers, tiles, intersections and the time zone of the browser console (docs/console.md).
    console: ConsoleMap = field(default_factory=ConsoleMap)
    # Civility indices, rankings and published reports (/v1/indices, /v1/rankings, /v1/reports; None: those
    # answer 503).
    indices: IndexService | None = None

    def __post_init__(self) -> None:
        if self.feed is not None and self.feed_waiter is None:
            self.feed_waiter = FeedWaiter(self.feed)
        # One /metrics per process: webhook deliveries are counted where the API serves its metrics.
        if self.webhooks is not None:
            self.webhooks.report_to(self.metrics)
        if self.cases is not None:
            self.cases.report_to(self.metrics)
