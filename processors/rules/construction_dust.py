"""Construction-site dust: at a site sensor (a device tagged `site: construction` by default), a valid
1-hour PM10 mean (readings spanning at least `min_minutes_1h` minutes) above `pm10_1h_ugm3` opens a
violation; a valid mean at or below it clears. For a sensor with a registered `expected_interval_s`, a
stretch between two readings further apart than `max_gap_intervals` intervals does not count towards the
minutes covered: a missing report is not sampling time. The incident starts at the reading whose mean
first went above the limit and ends at the reading whose mean first came back to it; the evidence lists
the newest readings of the hour (bounded), which never move the start. Other air sensors are not judged
by this rule.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from core.models import Event, Severity, Violation
from core.sanitation_settings import ConstructionDustSettings
from processors.devices import DeviceLookup, Thresholds
from processors.rule import Emitter, Rule
from processors.rules._common import (
    Reading,
    ZoneThresholds,
    clear_violation,
    expected_interval_ms,
    number,
    open_violation,
)
from processors.rules.rolling_mean import RollingMean, hourly_window

TYPE = "construction_dust"
_RECENT = 10


class DustState(msgspec.Struct):
    hour: RollingMean
    recent: list[Reading] = []
    open_violation: Violation | None = None


class ConstructionDustRule(Rule[DustState]):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({"air"})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"pm10_ugm3"})
    state_type: ClassVar[type[msgspec.Struct]] = DustState

    def __init__(self, settings: ConstructionDustSettings, devices: DeviceLookup | None = None,
                 zones: ZoneThresholds | None = None, *, kinds: ZoneThresholds | None = None) -> None:
        self.settings = settings
        self.thresholds = Thresholds(devices, zones, kinds)
        self.devices = self.thresholds.devices
        self.state_ttl_ms = settings.state_ttl_s * 1000

    def setting(self, event: Event, name: str, default: float) -> float:
        return self.thresholds.value(TYPE, name, default, device_id=event.device_id, kind=event.kind)

    def key_of(self, event: Event) -> str | None:
        if event.tags.get(self.settings.site_tag) != self.settings.site_value:
            return None
        return event.device_id

    def on_event(self, state: DustState | None, event: Event, out: Emitter) -> DustState | None:
        pm10 = number(event, "pm10_ugm3")
        if pm10 is None:
            return state
        state = state or DustState(hour=hourly_window())
        state.hour.add(event.event_time_ms, pm10)
        state.recent = [*state.recent, (event.event_id, event.event_time_ms, pm10)][-_RECENT:]
        mean = state.hour.mean()
        min_minutes = self.setting(event, "min_minutes_1h", self.settings.min_minutes_1h)
        interval_ms = expected_interval_ms(self.devices, event.device_id)
        max_gap_ms = None if interval_ms is None else int(
            interval_ms * self.setting(event, "max_gap_intervals", self.settings.max_gap_intervals))
        covered_ms = state.hour.covered_without_gaps_ms(max_gap_ms)
        if mean is None or covered_ms < min_minutes * 60_000:
            return state
        limit = self.setting(event, "pm10_1h_ugm3", self.settings.pm10_1h_ugm3)
        details = {"pm10_1h_mean": round(mean, 2), "minutes_covered": covered_ms // 60_000,
                   "limit_1h_ugm3": limit}
        if mean > limit and state.open_violation is None:
            # The exceedance began with this reading: the first whose valid 1-hour mean is above the
            # limit. `recent` is bounded evidence, not the begin.
            state.open_violation = open_violation(TYPE, event.device_id, event, state.recent,
                                                  Severity.MEDIUM, details,
                                                  begun_by=(event.event_id, event.event_time_ms))
            out.violation(state.open_violation)
        elif mean <= limit and state.open_violation is not None:
            out.violation(clear_violation(state.open_violation, event, {"cleared": details}))
            state.open_violation = None
        return state
