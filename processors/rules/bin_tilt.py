"""Bin knocked over: tilt at or above `open_deg` (default 45 degrees) opens; below `clear_deg` (set
upright again) clears. Sensors with a tilt switch instead of an angle (Milesight EM310-UDL's
`position: normal|tilt`, mapped to `tilted`) open on `tilted: true` and clear on `tilted: false`.
"""

from __future__ import annotations

from typing import ClassVar

from core.models import Event, Severity
from core.sanitation_settings import BinTiltSettings
from processors.devices import DeviceLookup
from processors.rules._common import Channel, Direction, LevelRule, ZoneThresholds, number

TYPE = "bin_tilt"


class BinTiltRule(LevelRule):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({"bin"})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"tilt_deg", "tilted"})

    def __init__(self, settings: BinTiltSettings, devices: DeviceLookup | None = None,
                 zones: ZoneThresholds | None = None, *, kinds: ZoneThresholds | None = None) -> None:
        if settings.clear_deg > settings.open_deg:
            raise ValueError("bin_tilt.clear_deg must not be above open_deg")
        super().__init__(devices, zones, settings.state_ttl_s, kinds)
        self.settings = settings
        self.consecutive = settings.consecutive
        self.max_gap_intervals = settings.max_gap_intervals

    def channels(self, event: Event) -> list[Channel]:
        tilt = number(event, "tilt_deg")
        if tilt is None:
            tilted = event.attributes.get("tilted")
            if not isinstance(tilted, bool):
                return []
            # The device judged it: 1 is tilted, 0 upright.
            return [Channel("tilted", 1.0 if tilted else 0.0, 1.0, 1.0, Direction.AT_OR_ABOVE,
                            Severity.MEDIUM, {"source": "tilt switch"})]
        return [Channel("tilt_deg", tilt, self.setting(event, "open_deg", self.settings.open_deg),
                        self.setting(event, "clear_deg", self.settings.clear_deg), Direction.AT_OR_ABOVE,
                        Severity.MEDIUM)]
