"""Stuck sensor: the same value of every watched attribute for `readings` readings in a row means the
sensor is frozen (a dead ultrasonic transducer repeats its last distance, a clogged PM sensor its last
count). The incident opens on the reading that completes the run and clears on the first reading with a
different value. While it is open the readings are marked suspect: the engine does not show them to the
other rules, so a frozen "bin full" distance cannot keep an overflow open or feed the forecast.

Only attributes that jitter on a working sensor are watched (configurable per kind): a fill level or an
odour reading of 0 may repeat for hours on a healthy device.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from core.models import Event, Severity, Violation
from core.sanitation_settings import StuckSensorSettings
from processors.rule import Emitter, Rule
from processors.rules._common import Reading, clear_violation, number, open_violation

TYPE = "sensor_stuck"


class StuckState(msgspec.Struct):
    values: list[float] = []
    # The run of identical readings, newest last (bounded by `readings`).
    run: list[Reading] = []
    open_violation: Violation | None = None


class StuckSensorRule(Rule[StuckState]):
    name: ClassVar[str] = TYPE
    reads_attributes: ClassVar[frozenset[str]] = frozenset()
    # The kinds watched are configured; events of other kinds find no watched attribute.
    kinds: ClassVar[frozenset[str]] = frozenset({"bin", "air", "water", "odour"})
    state_type: ClassVar[type[msgspec.Struct]] = StuckState
    inspects_readings: ClassVar[bool] = True

    def __init__(self, settings: StuckSensorSettings) -> None:
        self.settings = settings
        self.state_ttl_ms = settings.state_ttl_s * 1000

    def on_event(self, state: StuckState | None, event: Event, out: Emitter) -> StuckState | None:
        names = self.settings.attributes.get(event.kind, [])
        values = [number(event, name) for name in names]
        present = [value for value in values if value is not None]
        if not present:
            return state
        state = state or StuckState()
        reading = (event.event_id, event.event_time_ms, present[0])
        if present == state.values:
            state.run = [*state.run, reading][-self.settings.readings:]
        else:
            if state.open_violation is not None:
                out.violation(clear_violation(state.open_violation, event, {"new_values": present}))
                state.open_violation = None
            state.values, state.run = present, [reading]
        if len(state.run) >= self.settings.readings:
            if state.open_violation is None:
                state.open_violation = open_violation(
                    TYPE, event.device_id, event, state.run, Severity.LOW,
                    {"attributes": [n for n, v in zip(names, values, strict=True) if v is not None],
                     "values": present, "readings": self.settings.readings})
                out.violation(state.open_violation)
            out.suspect(f"{TYPE}: {names} repeated {self.settings.readings} times")
        return state
