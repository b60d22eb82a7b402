"""Stuck sensor: the same value of every watched attribute for `readings` readings in a row, spanning at
least `min_duration_s`, means the sensor is frozen (a dead ultrasonic transducer repeats its last
distance, a clogged PM sensor its last count). Both numbers have defaults per kind (`kind_defaults`: air
and water values rest legitimately for a while) and can be overridden per device, zone and kind. A
missing report (readings further apart than `max_gap_intervals` of the device's `expected_interval_s`)
starts the count again: the readings were not in a row.

The incident starts at the first reading of the identical run and opens on the reading that completes
it; it clears on the first reading with a different value. While it is open the readings are marked
suspect: the engine does not show them to the rules in `hide_suspect_from` (by default those that judge
the watched attributes), so a frozen "bin full" distance cannot keep an overflow open or feed the
forecast, while the same bin's temperature still reaches the fire rule.

Only attributes that jitter on a working sensor are watched (configurable per kind): a fill level or an
odour reading of 0 may repeat for hours on a healthy device.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from core.models import Event, Severity, Violation
from core.rule_overrides import rule_name
from core.sanitation_settings import StuckSensorSettings
from processors.devices import DeviceLookup, GroupedThresholds, Thresholds
from processors.rule import Emitter, Rule
from processors.rules._common import (
    Reading,
    clear_violation,
    expected_interval_ms,
    missing_report_between,
    number,
    open_violation,
)

TYPE = "sensor_stuck"


class StuckState(msgspec.Struct):
    values: list[float] = []
    # The newest readings of the run of identical readings, newest last (bounded by `readings`).
    run: list[Reading] = []
    open_violation: Violation | None = None
    # The first reading of the run (event id, event time): where the incident began.
    since: tuple[str, int] | None = None


class StuckSensorRule(Rule[StuckState]):
    name: ClassVar[str] = TYPE
    reads_attributes: ClassVar[frozenset[str]] = frozenset()
    # The kinds watched are configured; events of other kinds find no watched attribute.
    kinds: ClassVar[frozenset[str]] = frozenset({"bin", "air", "water", "odour"})
    state_type: ClassVar[type[msgspec.Struct]] = StuckState
    inspects_readings: ClassVar[bool] = True

    def __init__(self, settings: StuckSensorSettings, devices: DeviceLookup | None = None,
                 zones: GroupedThresholds | None = None, *, kinds: GroupedThresholds | None = None) -> None:
        self.settings = settings
        self.thresholds = Thresholds(devices, zones, kinds)
        self.state_ttl_ms = settings.state_ttl_s * 1000
        hidden = settings.hide_suspect_from
        # Named by violation type or section (checked at load); the engine compares violation types.
        self.hidden_from = None if hidden == ["*"] else frozenset(rule_name(name) for name in hidden)

    def setting(self, event: Event, name: str, default: float) -> float:
        """Overrides first, then this rule's default for the event's kind, then its configured value."""
        default = self.settings.kind_defaults.get(event.kind, {}).get(name, default)
        return self.thresholds.value(TYPE, name, default, device_id=event.device_id, kind=event.kind)

    def on_event(self, state: StuckState | None, event: Event, out: Emitter) -> StuckState | None:
        names = self.settings.attributes.get(event.kind, [])
        values = [number(event, name) for name in names]
        present = [value for value in values if value is not None]
        if not present:
            return state
        state = state or StuckState()
        time_ms = event.event_time_ms
        reading = (event.event_id, time_ms, present[0])
        readings = int(self.setting(event, "readings", self.settings.readings))
        same = present == state.values
        if same and state.open_violation is None and state.run and missing_report_between(
                state.run[-1][1], time_ms, expected_interval_ms(self.thresholds.devices, event.device_id),
                self.setting(event, "max_gap_intervals", self.settings.max_gap_intervals)):
            same = False  # a report is missing: the identical readings were not in a row
        if same:
            state.run = [*state.run, reading][-readings:]
            if state.since is None:  # state snapshotted before `since` was kept
                state.since = (state.run[0][0], state.run[0][1])
        else:
            if state.open_violation is not None:
                out.violation(clear_violation(state.open_violation, event, {"new_values": present}))
                state.open_violation = None
            state.values, state.run, state.since = present, [reading], (event.event_id, time_ms)
        since = state.since or (event.event_id, time_ms)
        min_duration_ms = int(self.setting(event, "min_duration_s", self.settings.min_duration_s) * 1000)
        stuck = len(state.run) >= readings and time_ms - since[1] >= min_duration_ms
        if state.open_violation is None and not stuck:
            return state
        if state.open_violation is None:
            state.open_violation = open_violation(
                TYPE, event.device_id, event, state.run, Severity.LOW,
                {"attributes": [n for n, v in zip(names, values, strict=True) if v is not None],
                 "values": present, "readings": readings, "min_duration_s": min_duration_ms / 1000,
                 "identical_since_ms": since[1]},
                begun_by=since)
            out.violation(state.open_violation)
        out.suspect(f"{TYPE}: {names} unchanged since {since[1]}", hide_from=self.hidden_from)
        return state
