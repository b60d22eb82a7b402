"""Time in the engine: what falls due between two calls happens at its own due time, so the violations
depend on what arrived when, never on how often the engine is ticked (live polls, replay steps, pace)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from core.models import Event, Violation
from core.sanitation_settings import DeviceOfflineSettings
from core.settings import BinOverflowSettings, DeviceSettings
from processors.engine import Engine, EngineOutput
from processors.rules.bin_overflow import BinOverflowRule
from processors.rules.device_offline import DeviceOfflineRule
from tests.support.events import T0_MS, reading

DEVICES = [DeviceSettings(device_id="bin-1", kind="bin", expected_interval_s=60, lat=22.5, lon=114.0),
           DeviceSettings(device_id="bin-2", kind="bin", expected_interval_s=20)]


def offline_engine() -> Engine:
    return Engine([DeviceOfflineRule(DeviceOfflineSettings(), DEVICES)], allowed_lateness_ms=2000)


def fed(engine: Engine, arrivals: Sequence[tuple[int, list[Event]]], tick_ms: int,
        until_ms: int) -> EngineOutput:
    """The engine fed each batch at its arrival time, ticked every `tick_ms` in between, up to `until_ms`."""
    out = EngineOutput()
    pending = list(arrivals)
    for now_ms in range(arrivals[0][0], until_ms + 1, tick_ms):
        while pending and pending[0][0] <= now_ms:
            at_ms, events = pending.pop(0)
            out.extend(engine.process(events, now_wall_ms=at_ms))
        out.extend(engine.process([], now_wall_ms=now_ms))
    out.extend(engine.drain())
    return out


def encoded(violations: list[Violation]) -> list[bytes]:
    return [msgspec.json.encode(violation) for violation in violations]


def test_device_offline_opens_at_the_exact_due_time_however_often_the_engine_is_ticked():
    arrivals = [(T0_MS, [reading("bin-1", 0, fill_pct=10), reading("bin-2", 0, fill_pct=10)]),
                (T0_MS + 40_000, [reading("bin-2", 40, fill_pct=11)])]
    runs = {tick_ms: fed(offline_engine(), arrivals, tick_ms, T0_MS + 400_000).violations
            for tick_ms in (100, 1000, 7000, 29_000)}
    reference = runs[1000]
    # bin-2 (limit 60 s) silent from its second message, bin-1 (limit 180 s) from its first, each heard
    # when judged: released from the reorder buffer 2 s (the allowed lateness) after it arrived.
    assert [(v.device_id, v.start_time_ms) for v in reference] == [("bin-2", T0_MS + 102_000),
                                                                    ("bin-1", T0_MS + 182_000)]
    assert reference[1].evidence.details["silent_s"] == 180
    assert {tick_ms: encoded(violations) for tick_ms, violations in runs.items()} == {
        tick_ms: encoded(reference) for tick_ms in runs}


def test_a_gap_longer_than_max_tick_gap_counts_only_its_start():
    engine = Engine([DeviceOfflineRule(DeviceOfflineSettings(), DEVICES[:1])], allowed_lateness_ms=0)
    engine.process([reading("bin-1", 0, fill_pct=10)], now_wall_ms=T0_MS)
    for second in range(1, 161):
        assert engine.process([], now_wall_ms=T0_MS + second * 1000).violations == []
    # Stalled for an hour after 160 s: the first 30 s of the gap count, which reach bin-1's 180 s.
    [offline] = engine.process([], now_wall_ms=T0_MS + 3_760_000).violations
    assert (offline.device_id, offline.start_time_ms) == ("bin-1", T0_MS + 180_000)


def test_a_stall_never_makes_a_device_offline():
    engine = Engine([DeviceOfflineRule(DeviceOfflineSettings(), DEVICES[:1])], allowed_lateness_ms=0)
    engine.process([reading("bin-1", 0, fill_pct=10)], now_wall_ms=T0_MS)
    for second in range(1, 121):
        engine.process([], now_wall_ms=T0_MS + second * 1000)
    # Stalled for an hour after 120 s: 30 s of it count (150 s of 180 s), then ticks again.
    assert engine.process([], now_wall_ms=T0_MS + 3_720_000).violations == []
    ticks = {second: engine.process([], now_wall_ms=T0_MS + 3_720_000 + second * 1000).violations
             for second in range(1, 40)}
    [(second, [offline])] = [(second, found) for second, found in ticks.items() if found]
    assert second == 30 and offline.start_time_ms == T0_MS + 3_750_000


def test_a_held_event_is_released_at_its_wall_deadline_not_at_the_next_call():
    # 95% at 10 s arrives first; 95% at 7 s arrives 2.5 s later, after the first was released (2 s).
    first, second = reading("bin-1", 10, fill_pct=95), reading("bin-1", 7, fill_pct=95)

    def delivered(*calls: tuple[int, list[Event]]) -> EngineOutput:
        engine = Engine([BinOverflowRule(BinOverflowSettings())], allowed_lateness_ms=2000)
        out = EngineOutput()
        for at_ms, events in calls:
            out.extend(engine.process(events, now_wall_ms=at_ms))
        out.extend(engine.drain())
        return out

    polled = delivered((0, [first]), *((at_ms, []) for at_ms in range(100, 2500, 100)), (2500, [second]))
    at_arrivals_only = delivered((0, [first]), (2500, [second]))
    assert polled.late_events == at_arrivals_only.late_events == [second]
    assert polled.violations == at_arrivals_only.violations == []


def test_the_engine_clock_never_goes_back_and_survives_a_snapshot():
    engine = offline_engine()
    engine.process([reading("bin-1", 0, fill_pct=10)], now_wall_ms=T0_MS + 5000)
    engine.process([], now_wall_ms=T0_MS)
    assert engine.clock_ms == T0_MS + 5000
    restored = offline_engine()
    restored.restore(engine.snapshot())
    assert restored.clock_ms == T0_MS + 5000
