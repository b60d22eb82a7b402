"""Running sanitation rules through the real engine, and registries shaped like the real one."""

from __future__ import annotations

from typing import Any

import msgspec

from core.models import Event, Violation
from core.settings import DeviceSettings
from processors.engine import Engine, EngineOutput
from processors.rule import Rule


def run_all(rules: list[Rule[Any]], events: list[Event], lateness_ms: int = 2000) -> EngineOutput:
    engine = Engine(rules, allowed_lateness_ms=lateness_ms)
    out = engine.process(events, now_wall_ms=0)
    out.extend(engine.drain())
    return out


def run(rule: Rule[Any], events: list[Event], lateness_ms: int = 2000) -> list[Violation]:
    return run_all([rule], events, lateness_ms).violations


def tagged(event: Event, **tags: str) -> Event:
    return msgspec.structs.replace(event, tags={**event.tags, **tags})


class Registry:
    """A device lookup over a few DeviceSettings, like ingest.registry.DeviceRegistry."""

    def __init__(self, *devices: DeviceSettings) -> None:
        self.devices = {d.device_id: d for d in devices}

    def get(self, device_id: str) -> DeviceSettings | None:
        return self.devices.get(device_id)
