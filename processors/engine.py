"""Runs rules over batches of events in event-time order.

Per batch: drop duplicate deliveries (bounded memory of recent event ids), hold events in a reorder
buffer until the watermark passes them, then hand them to each interested rule in event-time order, fire
due timers and expire idle state. The watermark is the newest event time seen minus the allowed
lateness, and also moves with the wall clock so that a quiet stream is not held back forever: no event
waits longer than the allowed lateness of wall time.

Time moves only when the caller says so (`process(events, now_wall_ms)`: these events arrived at that
wall time), but what falls due between two calls happens at its exact due time, not at the next call: a
held event's wall-clock release (arrival + allowed lateness) and a clock rule's deadline (e.g. a device's
silence reaching its limit) are each an engine step of their own, in time order. So the violations depend
only on what arrived when, not on how often the caller ticks: a live processor polling every 0.1 s, a
replay stepping once a recorded second and a replay at 1x real time give the same result.

Rules are pure; the engine owns their state, so the same engine runs behind the in-process bus and behind
Kafka, and its state can be snapshotted and restored.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import msgspec

from core.models import DeadLetter, Event, ExposureTotal, Violation
from processors.exposures import ExposureCounts
from processors.rule import ANY_KIND, Emitter, Rule
from processors.state import KeyedState

log = logging.getLogger(__name__)

NEVER = -(2**62)
_EVENT_TIME = itemgetter(0)


@dataclass
class EngineOutput:
    violations: list[Violation] = field(default_factory=list)
    # Events older than one already judged for the same rule key: stored, not judged.
    late_events: list[Event] = field(default_factory=list)
    duplicates: int = 0
    # Events a rule raised on: kept with the reason, the other rules still saw them.
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # Events a reading inspector marked as sensor faults: stored, not judged by the rules it hides them from.
    suspect_events: list[Event] = field(default_factory=list)
    # Derived records rules published (e.g. predictions), for the store.
    records: list[msgspec.Struct] = field(default_factory=list)
    # Exposure totals counted in this call: the latest of each (day, device, counter), for the store.
    exposures: list[ExposureTotal] = field(default_factory=list)

    def extend(self, other: EngineOutput) -> None:
        self.violations.extend(other.violations)
        self.exposures.extend(other.exposures)
        self.suspect_events.extend(other.suspect_events)
        self.records.extend(other.records)
        self.late_events.extend(other.late_events)
        self.duplicates += other.duplicates
        self.dead_letters.extend(other.dead_letters)


class _RecentIds:
    """Remembers the last `capacity` event ids (FIFO), to recognise redelivered events."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_seen(self, events: Iterable[Event]) -> list[Event]:
        """The events whose ids were not seen before, in order; remembers their ids."""
        ids = self._ids
        capacity = self.capacity
        fresh = []
        for event in events:
            event_id = event.event_id
            if event_id in ids:
                continue
            ids[event_id] = None
            if len(ids) > capacity:
                ids.popitem(last=False)
            fresh.append(event)
        return fresh

    def snapshot(self) -> list[str]:
        return list(self._ids)

    def restore(self, ids: Iterable[str]) -> None:
        self._ids = OrderedDict.fromkeys(ids)


class Engine:
    def __init__(self, rules: Sequence[Rule[Any]], *, allowed_lateness_ms: int,
                 dedup_capacity: int = 200_000, time_zone: str = "UTC") -> None:
        """`time_zone`: the city's (`traffic.time_zone`), whose calendar days exposures are counted on."""
        names = [rule.name for rule in rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rule names must be unique, got {names}")
        self.rules = list(rules)
        self.allowed_lateness_ms = allowed_lateness_ms
        self.states = {rule.name: KeyedState(rule.state_ttl_ms, rule.state_type) for rule in rules}
        self._plans_by_kind: dict[str, list[tuple[Rule[Any], KeyedState, bool, bool]]] = {}
        self._clock_rules = [rule for rule in rules if rule.uses_clock]
        self._recent = _RecentIds(dedup_capacity)
        self._idle_emitter = Emitter()
        self._seq = itertools.count()
        # Reorder buffer: (event_time_ms, seq, event), sorted. A list sorted once a batch rather than a
        # heap: feeds arrive nearly in event-time order, so the sort merges two runs in one pass, where a
        # heap paid a push and a pop of a dozen comparisons each per event.
        self._held: list[tuple[int, int, Event]] = []
        # Arrivals of held events, (arrival_wall_ms, newest event time of those that arrived then), one per
        # call: a call's events share their arrival, so they are released by the wall clock together.
        self._arrivals: deque[tuple[int, int]] = deque()
        self._max_event_time_ms = NEVER
        self._wall_release_ms = NEVER
        self.watermark_ms = NEVER
        # The wall clock: the newest time of a call or of a step the engine took between calls.
        self.clock_ms = NEVER
        # Event-time timers: (at_ms, seq, rule name, key).
        self._timers: list[tuple[int, int, str, str]] = []
        self.exposures = ExposureCounts(time_zone, allowed_lateness_ms)

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def pending_timers(self) -> int:
        return len(self._timers)

    def _plan_for(self, kind: str) -> list[tuple[Rule[Any], KeyedState, bool, bool]]:
        """The rules of a kind with their state, whether they inspect readings and whether they keep state
        per device (the default `key_of`, read here without a call), inspectors first (so they can gate
        the others): computed once per kind, it is what every event of the kind walks."""
        plan = self._plans_by_kind.get(kind)
        if plan is None:
            matching = [rule for rule in self.rules if kind in rule.kinds or ANY_KIND in rule.kinds]
            plan = [(rule, self.states[rule.name], rule.inspects_readings, type(rule).key_of is Rule.key_of)
                    for rule in sorted(matching, key=lambda rule: not rule.inspects_readings)]
            self._plans_by_kind[kind] = plan
        return plan

    def process(self, events: Iterable[Event], now_wall_ms: int, *, input_live: bool = True) -> EngineOutput:
        """Take a batch that arrived at `now_wall_ms` (possibly empty: then only the wall clock advances)
        and run what is due.

        First everything that fell due since the previous call runs at its own due time (see the module
        docstring); a `now_wall_ms` older than the engine's clock counts as the clock (time never goes
        back). `input_live` False says the input is cut off (ingest disconnected): rules that judge
        silence do not count the time from this call on.
        """
        out = EngineOutput()
        now_wall_ms = max(now_wall_ms, self.clock_ms)
        self._steps_before(now_wall_ms, out)
        self.clock_ms = now_wall_ms
        events = list(events)
        fresh = self._recent.first_seen(events)
        out.duplicates += len(events) - len(fresh)
        if fresh:
            seq = self._seq
            self._held.extend([(event.event_time_ms, next(seq), event) for event in fresh])
            self._held.sort()
            newest_ms = max(event.event_time_ms for event in fresh)
            self._arrivals.append((now_wall_ms, newest_ms))
            self._max_event_time_ms = max(self._max_event_time_ms, newest_ms)
        self._release_arrived(now_wall_ms, out)
        for rule in self._clock_rules:
            emitter = Emitter()
            rule.on_clock(self.states[rule.name], now_wall_ms, input_live, emitter)
            out.violations.extend(emitter.violations)
            out.records.extend(emitter.records)
        out.exposures = self.exposures.take_changed()
        return out

    def next_step_ms(self) -> int | None:
        """The wall time of the next step the engine takes on its own, once a call passes it: the
        reorder buffer's next wall-clock release or a clock rule's next deadline."""
        due: int | None = None
        if self._arrivals:
            due = self._arrivals[0][0] + self.allowed_lateness_ms
        for rule in self._clock_rules:
            rule_due = rule.next_due_ms()
            if rule_due is not None and (due is None or rule_due < due):
                due = rule_due
        # A deadline already passed is due now; a step always moves the clock (no step twice at a time).
        return None if due is None else max(due, self.clock_ms + 1)

    def _steps_before(self, now_wall_ms: int, out: EngineOutput) -> None:
        """Every step due before `now_wall_ms`, each at its own time (what is due at `now_wall_ms`
        itself happens in the call's own step, with the events that arrived then)."""
        while True:
            at_ms = self.next_step_ms()
            if at_ms is None or at_ms >= now_wall_ms:
                return
            self.clock_ms = at_ms
            self._release_arrived(at_ms, out)
            for rule in self._clock_rules:
                emitter = Emitter()
                rule.on_step(self.states[rule.name], at_ms, emitter)
                out.violations.extend(emitter.violations)
                out.records.extend(emitter.records)

    def _release_arrived(self, now_wall_ms: int, out: EngineOutput) -> None:
        """Release what has waited the allowed lateness of wall time, and judge up to the watermark."""
        while self._arrivals and self._arrivals[0][0] + self.allowed_lateness_ms <= now_wall_ms:
            _, event_time_ms = self._arrivals.popleft()
            self._wall_release_ms = max(self._wall_release_ms, event_time_ms)
        self._advance(max(self._max_event_time_ms - self.allowed_lateness_ms, self._wall_release_ms), out)

    def drain(self) -> EngineOutput:
        """Judge every held event now (clean stop or end of a replay); timers fire up to the newest event."""
        out = EngineOutput()
        self._arrivals.clear()
        self._advance(self._max_event_time_ms, out)
        out.exposures = self.exposures.take_changed()
        return out

    def _advance(self, watermark_ms: int, out: EngineOutput) -> None:
        changed = watermark_ms > self.watermark_ms
        if changed:
            self.watermark_ms = watermark_ms
        held = self._held
        timers = self._timers
        due = bisect_right(held, self.watermark_ms, key=_EVENT_TIME)
        if due:
            released = held[:due]
            del held[:due]
            for event_time_ms, _, event in released:
                if timers and timers[0][0] <= event_time_ms:  # tested here: few events have a timer due
                    self._fire_timers(event_time_ms, out)
                self._judge(event, out)
            changed = True
        self._fire_timers(self.watermark_ms, out)
        if changed:  # an idle tick has nothing new to expire (and ticks are most of the steps)
            for state in self.states.values():
                state.expire(self.watermark_ms)
            self.exposures.close_days(self.watermark_ms)

    def _judge(self, event: Event, out: EngineOutput) -> None:
        late = False
        suspect = False
        # The rules a suspect event is hidden from; None: every rule that does not inspect readings.
        hidden: frozenset[str] | None = None
        # An emitter is replaced only after a rule used it, and the unused one is kept for the next event:
        # most rule calls emit nothing, and allocating emitters was a measurable share of the engine's time.
        emitter = self._idle_emitter
        if emitter.used:  # only if an exception escaped the previous event half-way
            emitter = Emitter()
        time_ms = event.event_time_ms
        for rule, store, inspects, by_device in self._plan_for(event.kind):
            if suspect and not inspects:
                if hidden is None:
                    break  # inspectors come first: the rest of the rules never see a suspect reading
                if rule.name in hidden:
                    continue
            key = event.device_id if by_device else rule.key_of(event)
            if key is None:
                continue
            entry = store.lookup(key)
            if entry is not None and time_ms < entry.last_time_ms:
                late = True
                continue
            try:
                new_state = rule.on_event(None if entry is None else entry.state, event, emitter)
            except Exception as exc:  # one failing rule must not stop the others or the pipeline
                log.exception("rule %s failed on event %s", rule.name, event.event_id)
                out.dead_letters.append(_rule_failure(rule.name, event, exc))
                emitter = Emitter()  # drop whatever the failed call emitted
                continue
            if entry is not None and new_state is not None:
                # KeyedState.replace for a kept key, inline: the event is not late, so its time is the newest.
                entry.state = new_state
                entry.last_time_ms = time_ms
                store.touch(key)
            else:
                store.replace(key, entry, new_state, time_ms)
            if not emitter.used:
                continue
            self._collect(rule, key, emitter, out, event)
            if emitter.rejections:
                out.dead_letters.extend(_rejected(rule.name, event, reason, detail)
                                        for reason, detail in emitter.rejections)
            if emitter.suspect_reason is not None:
                if not suspect:
                    suspect = True
                    out.suspect_events.append(event)
                    hidden = emitter.suspect_hidden_from
                elif hidden is not None:  # a second inspector: hidden from what either names
                    wider = emitter.suspect_hidden_from
                    hidden = None if wider is None else hidden | wider
            emitter = Emitter()
        self._idle_emitter = emitter
        if late:
            out.late_events.append(event)

    def _collect(self, rule: Rule[Any], key: str, emitter: Emitter, out: EngineOutput,
                 event: Event | None) -> None:
        # Most emitters carry one kind of output (a count, a forecast): the empty lists are skipped.
        if emitter.violations:
            out.violations.extend(emitter.violations)
        if emitter.records:
            out.records.extend(emitter.records)
        for at_ms in emitter.timers:
            heapq.heappush(self._timers, (at_ms, next(self._seq), rule.name, key))
        for counter, time_ms, end_ms, amount, device_id, tags in emitter.counts:
            if device_id is None:
                if event is None:
                    raise ValueError(f"rule {rule.name} counted {counter} without a device outside an event")
                device_id = event.device_id
                if tags is None:
                    tags = event.tags
            if end_ms is None:
                self.exposures.add(device_id, counter, time_ms, amount, tags)
            else:
                self.exposures.add_time(device_id, counter, time_ms, end_ms, tags)

    def _fire_timers(self, up_to_ms: int, out: EngineOutput) -> None:
        timers = self._timers
        while timers and timers[0][0] <= up_to_ms:
            at_ms, _, rule_name, key = heapq.heappop(timers)
            rule = next(rule for rule in self.rules if rule.name == rule_name)
            store = self.states[rule_name]
            emitter = Emitter()
            new_state = rule.on_timer(store.get(key), key, at_ms, emitter)
            store.set(key, new_state, at_ms)
            self._collect(rule, key, emitter, out, None)

    def snapshot(self) -> bytes:
        """Rule state, pending timers, recent ids and the events still held for ordering.

        Complete at any moment between two `process` calls, so a checkpoint taken mid-stream together
        with the bus offset it covers restores exactly (the Kafka processors do that per partition).
        """
        return msgspec.msgpack.encode({
            "watermark_ms": self.watermark_ms,
            "max_event_time_ms": self._max_event_time_ms,
            "wall_release_ms": self._wall_release_ms,
            "clock_ms": self.clock_ms,
            "states": {name: state.snapshot() for name, state in self.states.items()},
            "timers": [(at_ms, rule_name, key) for at_ms, _, rule_name, key in self._timers],
            "recent_ids": self._recent.snapshot(),
            "held": [event for _, _, event in self._held],
            "arrivals": list(self._arrivals),
            "exposures": self.exposures.snapshot(),
        })

    def restore(self, snapshot: bytes) -> None:
        data = msgspec.msgpack.decode(snapshot)
        self.watermark_ms = data["watermark_ms"]
        self._max_event_time_ms = data["max_event_time_ms"]
        for name, rows in data["states"].items():
            if name in self.states:  # a rule removed from the configuration loses its state
                self.states[name].restore(rows)
        self._timers = [(at_ms, next(self._seq), rule_name, key)
                        for at_ms, rule_name, key in data["timers"] if rule_name in self.states]
        heapq.heapify(self._timers)
        self._recent.restore(data["recent_ids"])
        # Snapshots taken before held events were included have neither key.
        self._wall_release_ms = data.get("wall_release_ms", NEVER)
        self.clock_ms = data.get("clock_ms", NEVER)
        self._held = sorted((event.event_time_ms, next(self._seq), event)
                            for event in msgspec.convert(data.get("held", []), list[Event]))
        self._arrivals = deque((wall_ms, time_ms) for wall_ms, time_ms in data.get("arrivals", []))
        # Snapshots taken before exposures were counted have none: counting starts from nothing.
        self.exposures.restore(data.get("exposures"))


def _rule_failure(rule_name: str, event: Event, exc: Exception) -> DeadLetter:
    return _rejected(rule_name, event, "rule_error", f"rule {rule_name} failed: {type(exc).__name__}: {exc}")


def _rejected(rule_name: str, event: Event, reason: str, detail: str) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail=detail[:500],
        topic="",
        payload=msgspec.json.encode(event),
        received_time_ms=event.ingest_time_ms,
        source=f"rule:{rule_name}",
    )
