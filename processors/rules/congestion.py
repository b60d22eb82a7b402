"""Congestion (拥堵): a detector approach whose occupancy is at least `occupancy_pct` (30%) and whose mean
speed is at most `speed_kmh` (15 km/h) for `open_intervals` (3) consecutive intervals opens an incident;
`clear_intervals` (2) consecutive intervals that are not congested clear it. In between nothing changes,
so an approach hovering at the threshold opens once and never flaps.

A detector reading's time is the end of its interval. The incident starts where the first congested
interval of the opening run began and ends where the first free interval of the clearing run began; the
clear carries the peak occupancy, the lowest speed and the duration. Readings further apart than
`max_gap_intervals` (1.5) intervals break a run: a missing report is neither a congested nor a free
interval (the interval is the reading's `interval_s`, else the detector's registered
`expected_interval_s`, else `default_interval_s`). One state per detector and approach, dropped while
the approach flows freely.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from core.models import Event, Evidence, Severity, Violation, ViolationStatus, stable_id
from core.traffic_settings import CongestionSettings
from processors.rule import Emitter, Rule
from processors.rules._common import expected_interval_ms, missing_report_between
from processors.traffic import TrafficContext

TYPE = "congestion"


class Interval(msgspec.Struct, array_like=True):
    event_id: str
    time_ms: int  # the end of the interval
    occupancy_pct: float
    speed_kmh: float
    interval_ms: int = 0

    @property
    def begin_ms(self) -> int:
        return self.time_ms - self.interval_ms


class CongestionState(msgspec.Struct):
    last_ms: int = 0
    run: list[Interval] = []
    free: list[Interval] = []
    open: Violation | None = None
    peak_occupancy_pct: float = 0.0
    min_speed_kmh: float = 0.0
    congested_intervals: int = 0


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class CongestionRule(Rule[CongestionState]):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({"detector"})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"approach", "occupancy_pct", "speed_kmh",
        "interval_s", "intersection"})
    state_type: ClassVar[type[msgspec.Struct]] = CongestionState

    def __init__(self, settings: CongestionSettings, context: TrafficContext) -> None:
        self.settings = settings
        self.context = context
        self.state_ttl_ms = settings.state_ttl_s * 1000

    def key_of(self, event: Event) -> str:
        approach = event.attributes.get("approach")
        return f"{event.device_id}|{approach}" if isinstance(approach, str) else event.device_id

    def _interval_ms(self, event: Event) -> int:
        """The reading's interval: its own `interval_s`, else the detector's registered interval, else
        `default_interval_s`."""
        interval_s = _number(event.attributes.get("interval_s"))
        if interval_s:
            return int(interval_s * 1000)
        registered = expected_interval_ms(self.context.zones.devices, event.device_id)
        if registered:
            return registered
        return int(self._threshold(event, "default_interval_s", self.settings.default_interval_s) * 1000)

    def _threshold(self, event: Event, name: str, default: float) -> float:
        return self.context.zones.threshold(TYPE, name, default, device_id=event.device_id, kind=event.kind)

    def on_event(self, state: CongestionState | None, event: Event,
                 out: Emitter) -> CongestionState | None:
        occupancy = _number(event.attributes.get("occupancy_pct"))
        speed = _number(event.attributes.get("speed_kmh"))
        if occupancy is None or speed is None:
            return state
        settings = self.settings
        interval_ms = self._interval_ms(event)
        state = state or CongestionState()
        time_ms = event.event_time_ms
        if state.last_ms and missing_report_between(
                state.last_ms, time_ms, interval_ms,
                self._threshold(event, "max_gap_intervals", settings.max_gap_intervals)):
            state.run, state.free = [], []
        state.last_ms = time_ms
        reading = Interval(event.event_id, time_ms, occupancy, speed, interval_ms)
        congested = (occupancy >= self._threshold(event, "occupancy_pct", settings.occupancy_pct)
                     and speed <= self._threshold(event, "speed_kmh", settings.speed_kmh))
        if congested:
            state.free = []
            if state.open is not None:
                state.peak_occupancy_pct = max(state.peak_occupancy_pct, occupancy)
                state.min_speed_kmh = min(state.min_speed_kmh, speed)
                state.congested_intervals += 1
                return state
            state.run = [*state.run, reading]
            if len(state.run) >= int(self._threshold(event, "open_intervals", settings.open_intervals)):
                self._open(state, event, out)
            return state
        state.run = []
        if state.open is None:
            return None
        state.free = [*state.free, reading]
        if len(state.free) >= int(self._threshold(event, "clear_intervals", settings.clear_intervals)):
            out.violation(self._clear(state, event))
            return None
        return state

    def _open(self, state: CongestionState, event: Event, out: Emitter) -> None:
        run, settings = state.run, self.settings
        peak = max(interval.occupancy_pct for interval in run)
        high = self._threshold(event, "high_occupancy_pct", self.settings.high_occupancy_pct)
        approach = event.attributes.get("approach")
        state.open = Violation(
            violation_id=stable_id(TYPE, event.device_id, approach, run[0].event_id),
            type=TYPE,
            severity=Severity.HIGH if peak >= high else Severity.MEDIUM,
            device_id=event.device_id,
            start_time_ms=run[0].begin_ms,
            updated_time_ms=event.event_time_ms,
            location=event.location,
            tags=event.tags,
            evidence=Evidence(
                event_ids=[interval.event_id for interval in run],
                details={
                    "intersection": event.attributes.get("intersection"),
                    "approach": approach,
                    "occupancy_pct": [interval.occupancy_pct for interval in run],
                    "speed_kmh": [interval.speed_kmh for interval in run],
                    "open_occupancy_pct": self._threshold(event, "occupancy_pct", settings.occupancy_pct),
                    "open_speed_kmh": self._threshold(event, "speed_kmh", settings.speed_kmh),
                    "open_intervals": len(run),
                },
            ),
        )
        state.peak_occupancy_pct = peak
        state.min_speed_kmh = min(interval.speed_kmh for interval in run)
        state.congested_intervals = len(run)
        state.run = []
        out.violation(state.open)

    def _clear(self, state: CongestionState, event: Event) -> Violation:
        opened = state.open
        assert opened is not None
        end_ms = state.free[0].begin_ms
        return msgspec.structs.replace(
            opened,
            status=ViolationStatus.CLEARED,
            end_time_ms=end_ms,
            updated_time_ms=event.event_time_ms,
            evidence=msgspec.structs.replace(
                opened.evidence,
                event_ids=[*opened.evidence.event_ids, *(interval.event_id for interval in state.free)],
                details={**opened.evidence.details,
                         "peak_occupancy_pct": state.peak_occupancy_pct,
                         "min_speed_kmh": state.min_speed_kmh,
                         "congested_intervals": state.congested_intervals,
                         "duration_s": (end_ms - opened.start_time_ms) / 1000},
            ),
        )
