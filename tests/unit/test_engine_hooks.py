"""The engine's generic hooks: any-kind rules, reading inspectors that gate, the wall-clock tick,
derived records."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from core.models import Prediction
from processors.engine import Engine
from processors.rule import ANY_KIND, Emitter, Rule
from tests.support.events import reading


class Seen(msgspec.Struct):
    count: int = 0


class Counter(Rule[Seen]):
    name: ClassVar[str] = "counter"
    kinds: ClassVar[frozenset[str]] = frozenset({"bin"})
    state_type: ClassVar[type[msgspec.Struct]] = Seen
    state_ttl_ms = 60_000

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_event(self, state, event, out: Emitter):
        self.seen.append(event.event_id)
        out.record(Prediction(type="t", device_id=event.device_id, computed_time_ms=event.event_time_ms,
                              predicted_time_ms=None, value=1.0))
        return state


class Everything(Counter):
    name: ClassVar[str] = "everything"
    kinds: ClassVar[frozenset[str]] = frozenset({ANY_KIND})


class NegativeInspector(Counter):
    """Flags readings with a negative value as suspect."""

    name: ClassVar[str] = "inspector"
    inspects_readings: ClassVar[bool] = True

    def on_event(self, state, event, out: Emitter):
        if event.attributes.get("value", 0) < 0:
            out.suspect("negative")
        return state


class Clock(Counter):
    name: ClassVar[str] = "clock"
    uses_clock: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.ticks: list[tuple[int, bool]] = []

    def on_clock(self, states, now_wall_ms, input_live, out):
        self.ticks.append((now_wall_ms, input_live))


def test_any_kind_rules_see_every_kind():
    everything, counter = Everything(), Counter()
    engine = Engine([counter, everything], allowed_lateness_ms=0)
    events = [reading("a", 0, kind="bin"), reading("b", 1, kind="air"), reading("c", 2, kind="water")]
    out = engine.process(events, now_wall_ms=0)
    assert everything.seen == [e.event_id for e in events] and counter.seen == [events[0].event_id]
    assert len(out.records) == 4


def test_a_suspect_reading_reaches_inspectors_but_no_other_rule():
    counter, inspector = Counter(), NegativeInspector()
    engine = Engine([counter, inspector], allowed_lateness_ms=0)  # registration order does not matter
    good, bad = reading("a", 0, value=1), reading("a", 1, value=-5)
    out = engine.process([good, bad], now_wall_ms=0)
    assert counter.seen == [good.event_id] and inspector.seen == []
    assert out.suspect_events == [bad]


def test_clock_rules_are_ticked_on_every_step_with_the_input_state():
    clock = Clock()
    engine = Engine([clock], allowed_lateness_ms=0)
    engine.process([], now_wall_ms=1000)
    engine.process([reading("a", 0)], now_wall_ms=2000, input_live=False)
    assert clock.ticks == [(1000, True), (2000, False)]


def test_only_the_newest_forecast_per_device_is_kept_for_the_store():
    from processors.running_values import keep_newest

    def forecast(device, at):
        return Prediction(type="bin_full", device_id=device, computed_time_ms=at, predicted_time_ms=None,
                          value=1.0)

    records = [forecast("a", 1), forecast("b", 5), forecast("a", 3), forecast("a", 2), "not a forecast"]
    newest: dict = {}
    keep_newest(records, newest)
    assert list(newest.values()) == [forecast("a", 3), forecast("b", 5)]


def named(rule_name: str) -> Counter:
    rule = type(rule_name, (Counter,), {"name": rule_name})
    return rule()


class HidingInspector(Counter):
    """Flags negative readings and hides them only from the rules it names."""

    inspects_readings: ClassVar[bool] = True

    def __init__(self, name: str, hide_from: frozenset[str] | None) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]
        self.hide_from = hide_from

    def on_event(self, state, event, out: Emitter):
        if event.attributes.get("value", 0) < 0:
            out.suspect("negative", hide_from=self.hide_from)
        return state


def test_a_suspect_reading_is_hidden_only_from_the_rules_the_inspectors_name():
    a, b, c = named("a"), named("b"), named("c")
    inspectors = [HidingInspector("first", frozenset({"a"})), HidingInspector("second", frozenset({"b"}))]
    engine = Engine([a, b, c, *inspectors], allowed_lateness_ms=0)
    bad = reading("x", 0, value=-5)
    out = engine.process([bad], now_wall_ms=0)
    assert (a.seen, b.seen, c.seen) == ([], [], [bad.event_id])
    assert out.suspect_events == [bad]  # listed once, however many inspectors flag it


def test_an_inspector_that_names_no_rule_hides_the_reading_from_all():
    a, c = named("a"), named("c")
    engine = Engine([a, c, HidingInspector("first", frozenset({"a"})), HidingInspector("second", None)],
                    allowed_lateness_ms=0)
    engine.process([reading("x", 0, value=-5)], now_wall_ms=0)
    assert a.seen == [] and c.seen == []
