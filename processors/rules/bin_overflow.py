"""Bin overflow (满溢): fill at or above `open_pct` on `consecutive` readings in a row opens a violation;
a reading below `clear_pct` (the bin was emptied) clears it. Between the two thresholds nothing changes,
so a bin hovering around 90% opens once and never flaps; a missing report (readings further apart than
`max_gap_intervals` of the bin's `expected_interval_s`) breaks the run. Every number can be overridden
per bin, zone and kind (processors.devices.Thresholds). A sensor that reports an ultrasonic distance
instead of a fill level is turned into fill with the bin's registered depth (processors/rules/bin_fill.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import msgspec

from core.exposures import EXPOSURE_PAIRS
from core.models import Event, Evidence, Severity, Violation, ViolationStatus, stable_id
from core.settings import BinOverflowSettings
from processors.devices import DeviceLookup, GroupedThresholds, Thresholds
from processors.rule import Emitter, Rule
from processors.rules._common import (
    Reporting,
    count_reporting,
    expected_interval_ms,
    missing_report_between,
)
from processors.rules.bin_fill import fill_pct_of

TYPE = "bin_overflow"
EXPOSURE = next(pair for pair in EXPOSURE_PAIRS if pair.rule == TYPE)
COUNTERS = (EXPOSURE.observed, EXPOSURE.breaking)


class BinState(msgspec.Struct):
    # Readings at or above the open threshold in the current run: (event id, event time, fill), bounded
    # by `consecutive`; `since` is the first of them (event id, event time), where the incident began.
    run: list[tuple[str, int, float]] = []
    open_violation: Violation | None = None
    since: tuple[str, int] | None = None
    # The newest fill reading counted in the bin minutes (docs/denominators.md).
    reporting: Reporting | None = None


class BinOverflowRule(Rule[BinState]):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({"bin"})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"fill_pct", "distance_mm"})
    state_type: ClassVar[type[msgspec.Struct]] = BinState

    def __init__(self, settings: BinOverflowSettings, devices: DeviceLookup | None = None,
                 zones: GroupedThresholds | None = None, *, kinds: GroupedThresholds | None = None) -> None:
        if settings.clear_pct >= settings.open_pct:
            raise ValueError("bin_overflow.clear_pct must be below open_pct")
        self.settings = settings
        self.thresholds = Thresholds(devices, zones, kinds)
        self.devices = self.thresholds.devices
        self.state_ttl_ms = settings.state_ttl_s * 1000

    def on_event(self, state: BinState | None, event: Event, out: Emitter) -> BinState | None:
        fill = fill_pct_of(event, self.devices)
        if fill is None:  # a bin message without a fill level (e.g. only battery) says nothing here
            return state
        state = state or BinState()
        # Up to four settings a reading: the device's overrides looked up once (devices.Thresholds).
        own = self.thresholds.overrides(TYPE, event.device_id, event.kind)
        max_gap_intervals = own.get("max_gap_intervals", self.settings.max_gap_intervals)
        self._judge(state, event, fill, own, max_gap_intervals, out)
        state.reporting = count_reporting(
            out, state.reporting, event, state.open_violation is not None, COUNTERS, self.devices,
            lambda: max_gap_intervals)
        # Kept between fills: it holds the last reading, where the bin's next minutes start (state
        # still expires after `state_ttl_s` of silence).
        return state

    def _judge(self, state: BinState, event: Event, fill: float, own: Mapping[str, float],
               max_gap_intervals: float, out: Emitter) -> None:
        open_pct = own.get("open_pct", self.settings.open_pct)
        clear_pct = own.get("clear_pct", self.settings.clear_pct)
        if fill >= open_pct:
            consecutive = int(own.get("consecutive", self.settings.consecutive))
            interval_ms = expected_interval_ms(self.devices, event.device_id)
            if state.run and missing_report_between(
                    state.run[-1][1], event.event_time_ms, interval_ms, max_gap_intervals):
                state.run = []
            if not state.run:
                state.since = (event.event_id, event.event_time_ms)
            elif state.since is None:  # state snapshotted before `since` was kept
                state.since = (state.run[0][0], state.run[0][1])
            state.run = [*state.run, (event.event_id, event.event_time_ms, fill)][-consecutive:]
            if state.open_violation is None and len(state.run) >= consecutive and state.since is not None:
                state.open_violation = self._open(event, state.run, state.since, open_pct, consecutive)
                out.violation(state.open_violation)
            return
        state.run, state.since = [], None
        if fill < clear_pct and state.open_violation is not None:
            out.violation(self._clear(state.open_violation, event, fill, clear_pct))
            state.open_violation = None

    def _open(self, event: Event, run: list[tuple[str, int, float]], since: tuple[str, int],
              open_pct: float, consecutive: int) -> Violation:
        first_id, first_time_ms = since
        return Violation(
            violation_id=stable_id(TYPE, event.device_id, first_id),
            type=TYPE,
            severity=Severity.HIGH if run[-1][2] >= 100.0 else Severity.MEDIUM,
            device_id=event.device_id,
            start_time_ms=first_time_ms,
            updated_time_ms=event.event_time_ms,
            location=event.location,
            tags=event.tags,
            evidence=Evidence(
                event_ids=[event_id for event_id, _, _ in run],
                details={
                    "fill_pct": [fill for _, _, fill in run],
                    "open_pct": open_pct,
                    "consecutive": consecutive,
                },
            ),
        )

    def _clear(self, opened: Violation, event: Event, fill: float, clear_pct: float) -> Violation:
        return msgspec.structs.replace(
            opened,
            status=ViolationStatus.CLEARED,
            end_time_ms=event.event_time_ms,
            updated_time_ms=event.event_time_ms,
            evidence=msgspec.structs.replace(
                opened.evidence,
                event_ids=[*opened.evidence.event_ids, event.event_id],
                details={**opened.evidence.details, "cleared_fill_pct": fill,
                         "clear_pct": clear_pct},
            ),
        )
