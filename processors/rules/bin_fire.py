"""Bin fire: a bin's temperature at or above `open_c` (default 60 C) opens a critical violation; below
`clear_c` it clears. Smouldering rubbish heats a closed bin long before smoke is seen.
"""

from __future__ import annotations

from typing import ClassVar

from core.models import Event, Severity
from core.sanitation_settings import BinFireSettings
from processors.devices import DeviceLookup
from processors.rules._common import Channel, Direction, LevelRule, ZoneThresholds, number

TYPE = "bin_fire"


class BinFireRule(LevelRule):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({"bin"})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"temperature_c"})

    def __init__(self, settings: BinFireSettings, devices: DeviceLookup | None = None,
                 zones: ZoneThresholds | None = None, *, kinds: ZoneThresholds | None = None) -> None:
        if settings.clear_c > settings.open_c:
            raise ValueError("bin_fire.clear_c must not be above open_c")
        super().__init__(devices, zones, settings.state_ttl_s, kinds)
        self.settings = settings
        self.consecutive = settings.consecutive
        self.max_gap_intervals = settings.max_gap_intervals

    def channels(self, event: Event) -> list[Channel]:
        temperature = number(event, "temperature_c")
        if temperature is None:
            return []
        return [Channel("temperature_c", temperature, self.setting(event, "open_c", self.settings.open_c),
                        self.setting(event, "clear_c", self.settings.clear_c), Direction.AT_OR_ABOVE,
                        Severity.CRITICAL)]
