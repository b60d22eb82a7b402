"""Low battery: any device reporting `battery_pct` at or below `open_pct` (default 20%) opens a
maintenance violation; above `clear_pct` (the battery was replaced or recharged) it clears.
"""

from __future__ import annotations

from typing import ClassVar

from core.models import Event, Severity
from core.sanitation_settings import LowBatterySettings
from processors.devices import DeviceLookup
from processors.rule import ANY_KIND
from processors.rules._common import Channel, Direction, LevelRule, ZoneThresholds, number

TYPE = "low_battery"


class LowBatteryRule(LevelRule):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({ANY_KIND})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"battery_pct"})

    def __init__(self, settings: LowBatterySettings, devices: DeviceLookup | None = None,
                 zones: ZoneThresholds | None = None, *, kinds: ZoneThresholds | None = None) -> None:
        if settings.clear_pct < settings.open_pct:
            raise ValueError("low_battery.clear_pct must not be below open_pct")
        super().__init__(devices, zones, settings.state_ttl_s, kinds)
        self.settings = settings

    def channels(self, event: Event) -> list[Channel]:
        battery = number(event, "battery_pct")
        if battery is None:
            return []
        return [Channel("battery_pct", battery, self.setting(event, "open_pct", self.settings.open_pct),
                        self.setting(event, "clear_pct", self.settings.clear_pct), Direction.AT_OR_BELOW,
                        Severity.LOW)]
