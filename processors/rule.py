"""The rule interface: keyed state in, violations out, on event time.

A rule sees one event at a time for one key (a device, or an intersection), with the state it returned
for that key last time. Returning None discards the key's state, which is how rules keep the key space
bounded; the engine also expires state a key has not touched for `state_ttl_ms` of event time. Rules
never read clocks, never do I/O and never see events out of order for their key: the engine sorts by
event time first, and an event older than one already judged for its key is counted as late instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Generic, TypeVar

import msgspec

from core.models import Event, Violation, ViolationStatus
from processors.state import KeyedState

S = TypeVar("S", bound=msgspec.Struct)

ANY_KIND = "*"


class Emitter:
    """What a rule may do besides returning its state: emit violations and ask for event-time timers."""

    __slots__ = ("counts", "records", "rejections", "suspect_hidden_from", "suspect_reason", "timers",
                 "used", "violations")

    def __init__(self) -> None:
        # Whether the rule emitted anything: most calls emit nothing, and the engine reuses the emitter
        # until one does (a flag set by each method is cheaper than testing every list per rule call).
        self.used = False
        self.violations: list[Violation] = []
        self.timers: list[int] = []
        self.rejections: list[tuple[str, str]] = []
        # Derived values a rule publishes besides violations (e.g. a forecast), written by the worker.
        self.records: list[msgspec.Struct] = []
        # Exposure counts (docs/denominators.md): (counter, time or span start, span end or None for an
        # amount, amount, device id or None for the judged event's, place tags or None for its tags).
        self.counts: list[tuple[str, int, int | None, int, str | None, dict[str, str] | None]] = []
        self.suspect_reason: str | None = None
        # The rules that must not see a suspect event (None: every rule that does not inspect readings).
        self.suspect_hidden_from: frozenset[str] | None = None

    def violation(self, violation: Violation) -> None:
        """Emit a state of a violation. The first open state of an id, which no rule sets
        `detected_time_ms` on, is stamped here with its own `updated_time_ms`: the event time at which the
        rule opened it. The stamp is set on the value the rule holds (before anyone else sees it), so
        the rule's later states built from it (cleared, replaced) keep it; a rule that re-issues an open
        violation as a new value passes the first one's `detected_time_ms` on."""
        if violation.detected_time_ms is None and violation.status is ViolationStatus.OPEN:
            msgspec.structs.force_setattr(violation, "detected_time_ms", violation.updated_time_ms)
        self.violations.append(violation)
        self.used = True

    def reject(self, reason: str, detail: str) -> None:
        """Dead-letter the event being judged: it breaks what this rule requires (the detail names the
        field). The event is still stored and other rules still see it."""
        self.rejections.append((reason, detail))
        self.used = True

    def timer(self, at_ms: int) -> None:
        """Call the rule's on_timer for this key once the watermark reaches `at_ms` (event time)."""
        self.timers.append(at_ms)
        self.used = True

    def record(self, record: msgspec.Struct) -> None:
        """Publish a derived record (e.g. a Prediction); the worker hands it to the store."""
        self.records.append(record)
        self.used = True

    def count(self, counter: str, time_ms: int, amount: int = 1, *, device_id: str | None = None,
              tags: dict[str, str] | None = None) -> None:
        """Add `amount` to an exposure counter (core/exposures.py) on the local day of `time_ms` (event
        time). The device and its tags (the engine keeps their place tags) are the judged event's unless
        given (a timer must give them).
        Counted from `on_event` and `on_timer` only (the engine reads no counts from clock calls)."""
        self.counts.append((counter, time_ms, None, amount, device_id, tags))
        self.used = True

    def count_time(self, counter: str, start_ms: int, end_ms: int, *, device_id: str | None = None,
                   tags: dict[str, str] | None = None) -> None:
        """Add the time [start_ms, end_ms) to a time counter (minutes), split at local midnight."""
        if end_ms > start_ms:
            self.counts.append((counter, start_ms, end_ms, 0, device_id, tags))
            self.used = True

    def suspect(self, reason: str, hide_from: frozenset[str] | None = None) -> None:
        """Only for rules with `inspects_readings`: the event is a sensor fault. The rules named in
        `hide_from` (None: every other rule) do not see it; the rest still judge it."""
        self.suspect_reason = reason
        self.suspect_hidden_from = hide_from
        self.used = True


class Rule(ABC, Generic[S]):
    name: ClassVar[str]
    # Event kinds this rule consumes; others never reach it. ANY_KIND ("*") receives every kind.
    kinds: ClassVar[frozenset[str]]
    # Attributes of those kinds whose values this rule judges (fill_pct, pm10_ugm3, ...). Sensor-fault
    # inspectors, which check any reading, and rules that judge silence declare none. `citywatch
    # check-config` names a configured attribute that no enabled rule reads (citywatch/config_findings.py).
    reads_attributes: ClassVar[frozenset[str]]
    # A reading inspector (sensor faults) runs before the other rules of a kind and may mark an event
    # suspect with `out.suspect(reason, hide_from)`: the rules it names (or all others) never see it.
    inspects_readings: ClassVar[bool] = False
    # Rules that judge silence (no events at all) set this; the engine then calls on_clock on each tick
    # and on_step at each step it takes between ticks.
    uses_clock: ClassVar[bool] = False
    # The msgspec struct type of the per-key state, so state can be snapshotted and restored.
    state_type: ClassVar[type[msgspec.Struct]]
    # Forget a key whose state was not touched for this long in event time.
    state_ttl_ms: int

    def key_of(self, event: Event) -> str | None:
        """The state key of an event; None skips it. Default: one state per device."""
        return event.device_id

    @abstractmethod
    def on_event(self, state: S | None, event: Event, out: Emitter) -> S | None:
        """Judge one event; return the key's new state (None: discard it)."""

    def on_timer(self, state: S | None, key: str, at_ms: int, out: Emitter) -> S | None:
        """A timer asked for with `out.timer(at_ms)` is due; default: keep the state."""
        return state

    def on_clock(self, states: KeyedState, now_wall_ms: int, input_live: bool, out: Emitter) -> None:
        """Wall-clock tick for rules with `uses_clock`, called on every `Engine.process` call (also idle
        ones), after the events that arrived at `now_wall_ms` were judged.

        `input_live` is False while the input is known to be cut off (ingest disconnected from MQTT):
        silence then says nothing about devices. The rule may read and set its own keyed state.
        """

    def next_due_ms(self) -> int | None:
        """For rules with `uses_clock`: the wall time before the next tick at which something falls due
        (e.g. a device's silence reaches its limit), or None. The engine then steps there exactly
        (`on_step`), so the result does not depend on how often the engine is ticked."""
        return None

    def on_step(self, states: KeyedState, at_ms: int, out: Emitter) -> None:
        """For rules with `uses_clock`: a step the engine takes on its own between two ticks, at wall
        time `at_ms` (a time `next_due_ms` asked for, or a wall-clock release of held events, judged just
        before); the input state is that of the last tick."""
