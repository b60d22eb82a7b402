"""The rule engine: ordering, duplicates, wall-clock release, timers, expiry, failures, snapshots."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from core.models import Event, Evidence, Severity, Violation, stable_id
from core.settings import BinOverflowSettings
from processors.engine import Engine
from processors.rule import Emitter, Rule
from processors.rules.bin_overflow import BinOverflowRule
from tests.support.events import T0_MS, reading


class Seen(msgspec.Struct):
    times: list[int] = []


class Recorder(Rule[Seen]):
    """Emits one violation per event so tests can see what the rule was shown, in which order."""

    name: ClassVar[str] = "recorder"
    kinds: ClassVar[frozenset[str]] = frozenset({"bin"})
    state_type: ClassVar[type[msgspec.Struct]] = Seen

    def __init__(self, ttl_ms: int = 60_000, timer_after_ms: int | None = None) -> None:
        self.state_ttl_ms = ttl_ms
        self.timer_after_ms = timer_after_ms
        self.timers_fired: list[tuple[str, int]] = []

    def on_event(self, state, event, out: Emitter):
        state = state or Seen()
        state.times.append(event.event_time_ms)
        out.violation(_marker(event.device_id, event.event_time_ms))
        if self.timer_after_ms is not None:
            out.timer(event.event_time_ms + self.timer_after_ms)
        return state

    def on_timer(self, state, key, at_ms, out):
        self.timers_fired.append((key, at_ms))
        return state


class Crashing(Recorder):
    name: ClassVar[str] = "crashing"

    def on_event(self, state, event, out):
        raise ZeroDivisionError("boom")


def _marker(device_id: str, time_ms: int) -> Violation:
    return Violation(violation_id=stable_id(device_id, time_ms), type="seen", severity=Severity.LOW,
                     device_id=device_id, start_time_ms=time_ms, updated_time_ms=time_ms,
                     evidence=Evidence(event_ids=[]))


def times(violations):
    return [v.start_time_ms - T0_MS for v in violations]


def test_events_wait_for_the_watermark_then_come_out_in_event_time_order():
    engine = Engine([Recorder()], allowed_lateness_ms=2000)
    out = engine.process([reading("b", 3), reading("b", 1.5), reading("b", 2)], now_wall_ms=0)
    assert out.violations == []  # all within the lateness of the newest event
    out = engine.process([reading("b", 5.5)], now_wall_ms=10)
    assert times(out.violations) == [1500, 2000, 3000]


def test_quiet_stream_is_released_after_the_lateness_in_wall_time():
    engine = Engine([Recorder()], allowed_lateness_ms=2000)
    engine.process([reading("b", 1)], now_wall_ms=1_000)
    assert engine.process([], now_wall_ms=2_999).violations == []
    assert times(engine.process([], now_wall_ms=3_000).violations) == [1000]


def test_each_call_s_events_are_released_at_that_call_s_arrival_plus_the_lateness():
    engine = Engine([Recorder()], allowed_lateness_ms=2000)
    engine.process([reading("b", 10)], now_wall_ms=1_000)
    # Within the lateness of the newest event: these wait for the wall clock too (newest first in the call).
    assert engine.process([reading("c", 11), reading("d", 10.5)], now_wall_ms=2_000).violations == []
    assert times(engine.process([], now_wall_ms=3_000).violations) == [10_000]  # not those of 2,000
    assert engine.process([], now_wall_ms=3_999).violations == []
    assert times(engine.process([], now_wall_ms=4_000).violations) == [10_500, 11_000]


def test_duplicates_are_dropped_and_counted():
    engine = Engine([Recorder()], allowed_lateness_ms=0)
    event = reading("b", 1)
    out = engine.process([event, event], now_wall_ms=0)
    out.extend(engine.process([event], now_wall_ms=0))
    assert out.duplicates == 2 and len(out.violations) == 1


def test_dedup_memory_is_bounded():
    engine = Engine([Recorder()], allowed_lateness_ms=0, dedup_capacity=2)
    first = reading("b", 1)
    engine.process([first, reading("b", 2), reading("b", 3)], now_wall_ms=0)
    assert engine.process([first], now_wall_ms=0).duplicates == 0


def test_device_with_a_slow_clock_is_still_judged_in_its_own_order():
    engine = Engine([Recorder()], allowed_lateness_ms=1000)
    engine.process([reading("fast", 100)], now_wall_ms=0)
    out = engine.process([reading("slow", 10), reading("slow", 11)], now_wall_ms=0)
    assert times(out.violations) == [10_000, 11_000] and out.late_events == []


def test_timers_fire_when_the_watermark_passes_them():
    rule = Recorder(timer_after_ms=5000)
    engine = Engine([rule], allowed_lateness_ms=0)
    engine.process([reading("b", 0)], now_wall_ms=0)
    engine.process([reading("other", 4)], now_wall_ms=0)
    assert rule.timers_fired == []
    engine.process([reading("other", 5)], now_wall_ms=0)
    assert rule.timers_fired == [("b", T0_MS + 5000)]


def test_state_of_idle_keys_expires_in_event_time():
    engine = Engine([Recorder(ttl_ms=10_000)], allowed_lateness_ms=0)
    engine.process([reading("a", 0), reading("b", 8)], now_wall_ms=0)
    engine.process([reading("b", 12)], now_wall_ms=0)
    assert list(engine.states["recorder"]) == ["b"]


def test_a_failing_rule_dead_letters_the_event_and_the_others_still_run():
    engine = Engine([Crashing(), Recorder()], allowed_lateness_ms=0)
    out = engine.process([reading("b", 1)], now_wall_ms=0)
    assert len(out.violations) == 1
    [letter] = out.dead_letters
    assert letter.reason == "rule_error" and "ZeroDivisionError: boom" in letter.detail
    assert msgspec.json.decode(letter.payload, type=Event) == reading("b", 1)


def test_snapshot_and_restore_continue_an_open_violation():
    settings = BinOverflowSettings()
    first = Engine([BinOverflowRule(settings)], allowed_lateness_ms=0)
    [opened] = first.process([reading("bin", 0, fill_pct=95), reading("bin", 60, fill_pct=96)],
                             now_wall_ms=0).violations
    first.drain()
    second = Engine([BinOverflowRule(settings)], allowed_lateness_ms=0)
    second.restore(first.snapshot())
    [cleared] = second.process([reading("bin", 120, fill_pct=5)], now_wall_ms=0).violations
    assert cleared.violation_id == opened.violation_id and cleared.status == "cleared"
    # Redelivery of an event judged before the restart is still recognised as a duplicate.
    assert second.process([reading("bin", 60, fill_pct=96)], now_wall_ms=0).duplicates == 1


def test_a_snapshot_taken_while_events_are_held_restores_them_and_their_release_time():
    rule_settings = BinOverflowSettings()
    uninterrupted = Engine([BinOverflowRule(rule_settings)], allowed_lateness_ms=2000)
    checkpointed = Engine([BinOverflowRule(rule_settings)], allowed_lateness_ms=2000)
    first = [reading("bin", 0, fill_pct=95), reading("bin", 1, fill_pct=96)]
    assert uninterrupted.process(first, now_wall_ms=0).violations == []
    assert checkpointed.process(first, now_wall_ms=0).violations == []
    assert checkpointed.held == 2
    restored = Engine([BinOverflowRule(rule_settings)], allowed_lateness_ms=2000)
    restored.restore(checkpointed.snapshot())
    assert restored.held == 2
    # The held events are released by the wall clock exactly as they would have been without a restart.
    assert restored.process([], now_wall_ms=1999).violations == []
    expected = uninterrupted.process([], now_wall_ms=2000).violations
    assert len(expected) == 1
    assert restored.process([], now_wall_ms=2000).violations == expected
    # Held events count as seen: a redelivery after the restore is a duplicate, not a second reading.
    assert restored.process([reading("bin", 1, fill_pct=96)], now_wall_ms=2001).duplicates == 1
