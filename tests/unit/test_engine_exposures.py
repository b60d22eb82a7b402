"""Exposure counting in the engine: running totals per (local day, device, counter) in event time, that
duplicates and too-late events never reach, that survive a snapshot, and that forget closed days."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import ClassVar
from zoneinfo import ZoneInfo

import msgspec

from core.metrics import Metrics
from core.models import Event, ExposureTotal, Prediction
from processors.bus import Batch
from processors.engine import Engine, EngineOutput
from processors.inprocess_bus import InProcessBus
from processors.rule import Emitter, Rule
from processors.worker import ProcessorWorker
from store.base import ExposureQuery, ExposureSum
from store.sqlite_store import SqliteStore
from tests.support.events import T0_MS, reading

HOUR_S = 3600
# T0 is 13:00 in Shanghai (UTC+8): local midnight comes 11 hours later.
TO_MIDNIGHT_S = 11 * HOUR_S
TAGS = {"grid": "g-1", "district": "north", "intersection": "x-1"}


class Last(msgspec.Struct):
    time_ms: int = 0


class Counting(Rule[Last]):
    """Counts every bin reading as a stop-line crossing and its `red` readings as red-light crossings;
    counts the time since the device's previous reading as sensor minutes."""

    name: ClassVar[str] = "counting"
    kinds: ClassVar[frozenset[str]] = frozenset({"bin"})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"red"})
    state_type: ClassVar[type[msgspec.Struct]] = Last
    state_ttl_ms = 10 * 86_400_000

    def on_event(self, state: Last | None, event: Event, out: Emitter) -> Last:
        if event.attributes.get("fail"):
            out.count("stop_line_crossings", event.event_time_ms)
            raise ValueError("judging failed half-way")
        out.count("stop_line_crossings", event.event_time_ms)
        if event.attributes.get("red"):
            out.count("red_light_crossings", event.event_time_ms)
        if state is not None:
            out.count_time("air_sensor_minutes", state.time_ms, event.event_time_ms)
        return Last(event.event_time_ms)


def event(at_s: float, device: str = "cam-1", **attributes: object) -> Event:
    return msgspec.structs.replace(reading(device, at_s, **attributes), tags={**TAGS, "department": "police"})


def engine(lateness_ms: int = 0) -> Engine:
    return Engine([Counting()], allowed_lateness_ms=lateness_ms, time_zone="Asia/Shanghai")


def totals(out: EngineOutput) -> dict[tuple[str, str, str], float]:
    return {(t.day, t.device_id, t.counter): t.value for t in out.exposures}


def test_counts_are_running_totals_per_local_day_with_the_device_place() -> None:
    out = engine().process([event(0), event(10, red=True), event(20)], now_wall_ms=0)
    assert out.exposures == [
        ExposureTotal(day="2025-11-26", device_id="cam-1", counter="stop_line_crossings", value=3.0,
                      tags=TAGS),
        ExposureTotal(day="2025-11-26", device_id="cam-1", counter="red_light_crossings", value=1.0,
                      tags=TAGS),
        ExposureTotal(day="2025-11-26", device_id="cam-1", counter="air_sensor_minutes", value=20 / 60,
                      tags=TAGS),
    ]


def test_only_the_counters_that_changed_come_out_and_with_their_new_total() -> None:
    counting = engine()
    counting.process([event(0, red=True), event(60)], now_wall_ms=0)
    assert totals(counting.process([event(90)], now_wall_ms=0)) == {
        ("2025-11-26", "cam-1", "stop_line_crossings"): 3.0,
        ("2025-11-26", "cam-1", "air_sensor_minutes"): 1.5,
    }
    assert counting.process([], now_wall_ms=10_000).exposures == []


def test_days_are_local_and_time_is_split_at_local_midnight() -> None:
    out = engine().process([event(TO_MIDNIGHT_S - 90), event(TO_MIDNIGHT_S + 30)], now_wall_ms=0)
    assert totals(out) == {
        ("2025-11-26", "cam-1", "stop_line_crossings"): 1.0,
        ("2025-11-27", "cam-1", "stop_line_crossings"): 1.0,
        ("2025-11-26", "cam-1", "air_sensor_minutes"): 1.5,
        ("2025-11-27", "cam-1", "air_sensor_minutes"): 0.5,
    }


def test_a_duplicate_delivery_counts_nothing() -> None:
    counting = engine()
    counting.process([event(0), event(10)], now_wall_ms=0)
    again = counting.process([event(10)], now_wall_ms=1)
    assert again.duplicates == 1
    assert again.exposures == []
    assert totals(EngineOutput(exposures=counting.exposures.totals())) == {
        ("2025-11-26", "cam-1", "stop_line_crossings"): 2.0,
        ("2025-11-26", "cam-1", "air_sensor_minutes"): 10 / 60,
    }


def test_an_event_older_than_one_judged_for_its_key_is_late_and_counts_nothing() -> None:
    counting = engine()
    counting.process([event(0), event(10)], now_wall_ms=0)
    late = counting.process([event(5, red=True)], now_wall_ms=1)
    assert len(late.late_events) == 1
    assert late.exposures == []


def test_what_a_failing_rule_counted_before_it_failed_is_dropped() -> None:
    out = engine().process([event(0, fail=True)], now_wall_ms=0)
    assert [letter.reason for letter in out.dead_letters] == ["rule_error"]
    assert out.exposures == []


def test_a_restored_snapshot_continues_the_totals_and_a_replay_from_it_rewrites_the_same_ones() -> None:
    first = engine()
    first.process([event(0), event(10, red=True)], now_wall_ms=0)
    checkpoint = first.snapshot()
    rest = [event(20), event(30, red=True), event(40)]
    uncrashed = totals(first.process(rest, now_wall_ms=1))
    restarted = engine()
    restarted.restore(checkpoint)
    assert totals(restarted.process(rest, now_wall_ms=1)) == uncrashed == {
        ("2025-11-26", "cam-1", "stop_line_crossings"): 5.0,
        ("2025-11-26", "cam-1", "red_light_crossings"): 2.0,
        ("2025-11-26", "cam-1", "air_sensor_minutes"): 40 / 60,
    }


def test_after_an_unclean_stop_counting_goes_on_from_the_stored_totals_that_are_ahead() -> None:
    stale = engine()
    stale.process([event(0)], now_wall_ms=0)  # the state of the last clean stop: 1 crossing
    stored = [
        ExposureTotal(day="2025-11-26", device_id="cam-1", counter="stop_line_crossings", value=7),
        ExposureTotal(day="2025-11-26", device_id="cam-2", counter="air_sensor_minutes", value=2.5),
        ExposureTotal(day="2025-11-26", device_id="cam-1", counter="not_a_counter", value=1),
    ]
    assert stale.exposures.resume(stored) == 2
    assert stale.exposures.resume([msgspec.structs.replace(stored[0], value=3)]) == 0  # behind: kept
    counted = totals(stale.process([event(10), event(20, device="cam-2")], now_wall_ms=0))
    assert counted[("2025-11-26", "cam-1", "stop_line_crossings")] == 8.0
    assert counted[("2025-11-26", "cam-2", "stop_line_crossings")] == 1.0
    assert "not_a_counter" not in {total.counter for total in stale.exposures.totals()}


def test_the_open_days_are_the_ones_an_event_could_still_reach() -> None:
    counting = engine(lateness_ms=60_000)
    # 13:00 in Shanghai: yesterday is still open (lateness plus a day), and tomorrow may begin.
    assert counting.exposures.open_days(T0_MS) == ["2025-11-25", "2025-11-26", "2025-11-27"]


def test_closed_days_are_forgotten_and_a_count_for_one_is_dropped() -> None:
    counting = engine(lateness_ms=60_000)
    counting.process([event(0), event(0, device="cam-2")], now_wall_ms=0)
    # At 02:00 two local days later, the first day is closed (its end is more than the lateness and a
    # day behind the watermark): its totals leave the state. The day before is still open.
    two_days_s = TO_MIDNIGHT_S + 86_400 + 2 * HOUR_S
    counting.process([event(two_days_s)], now_wall_ms=0)
    counting.process([], now_wall_ms=60_000)  # released after the allowed lateness of wall time
    assert {t.day for t in counting.exposures.totals()} == {"2025-11-27", "2025-11-28"}
    # A reading of the closed day for a device with no later state is still judged, but counts nothing:
    # a total started from zero would overwrite the day's stored total.
    late = counting.process([event(60, device="cam-3")], now_wall_ms=60_000)
    assert late.late_events == []
    assert late.exposures == []


def test_the_state_holds_a_few_days_per_device_however_long_the_stream() -> None:
    counting = engine()
    sizes = []
    for day in range(30):
        counting.process([event(day * 86_400 + s, device=f"cam-{n}") for s in (0, 600) for n in range(3)],
                         now_wall_ms=0)
        sizes.append(len(counting.exposures))
    # 3 devices x 2 counters x at most 3 open days (the day, yesterday and the lateness margin)
    assert max(sizes) <= 3 * 2 * 3
    assert sizes[-1] == sizes[-10]


def test_the_embedded_worker_stores_the_totals_at_most_once_a_second_and_at_the_end(tmp_path: Path) -> None:
    store = SqliteStore.in_directory(tmp_path)
    clock = {"now_ms": 0}
    bus = InProcessBus(100)
    worker = ProcessorWorker(bus.consumer(), engine(), store, Metrics(), batch_events=100,
                             now_ms=lambda: clock["now_ms"])

    def grid_totals() -> list[ExposureSum]:
        return store.exposure_sums(ExposureQuery("2025-11-26", "2025-11-26", "grid"))

    def sums(sensor_minutes: float, red: float, stop_line: float) -> list[ExposureSum]:
        return [ExposureSum("g-1", "air_sensor_minutes", sensor_minutes),
                ExposureSum("g-1", "red_light_crossings", red),
                ExposureSum("g-1", "stop_line_crossings", stop_line)]

    try:
        worker.step(Batch(events=[event(0), event(10, red=True)]))
        assert grid_totals() == sums(10 / 60, 1, 2)  # the first batch's totals at once
        clock["now_ms"] = 999
        worker.step(Batch(events=[event(20, red=True), event(20, red=True)]))  # one is a duplicate
        assert grid_totals() == sums(10 / 60, 1, 2)  # held: the last write was less than a second ago
        clock["now_ms"] = 1000
        worker.step(Batch())
        assert grid_totals() == sums(20 / 60, 2, 3)
        clock["now_ms"] = 1500
        worker.step(Batch(events=[event(30)]))
        assert grid_totals() == sums(20 / 60, 2, 3)
        bus.close()
        worker.start()  # the clean stop: drains the closed bus, judges what is held, writes what is held
        worker.stop()
        assert worker.error is None
        assert grid_totals() == sums(30 / 60, 2, 4)
    finally:
        store.close()


class Forecasting(Rule[Last]):
    """Publishes a forecast with every reading: its `fill_pct` as the value."""

    name: ClassVar[str] = "forecasting"
    kinds: ClassVar[frozenset[str]] = frozenset({"bin"})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"fill_pct"})
    state_type: ClassVar[type[msgspec.Struct]] = Last
    state_ttl_ms = 86_400_000

    def on_event(self, state: Last | None, event: Event, out: Emitter) -> Last:
        out.record(Prediction(type="bin_full", device_id=event.device_id,
                              computed_time_ms=event.event_time_ms, predicted_time_ms=None,
                              value=event.attributes["fill_pct"]))
        return Last(event.event_time_ms)


def test_the_embedded_worker_stores_the_newest_forecasts_at_most_once_a_second_and_at_the_end(
        tmp_path: Path) -> None:
    store = SqliteStore.in_directory(tmp_path)
    clock = {"now_ms": 0}
    bus = InProcessBus(100)
    worker = ProcessorWorker(bus.consumer(), Engine([Forecasting()], allowed_lateness_ms=0), store, Metrics(),
                             batch_events=100, now_ms=lambda: clock["now_ms"])

    def forecasts() -> dict[str, float]:
        return {p.device_id: p.value for p in store.query_predictions("bin_full")}

    try:
        worker.step(Batch(events=[event(0, fill_pct=10), event(0, device="bin-2", fill_pct=50)]))
        assert forecasts() == {"cam-1": 10, "bin-2": 50}
        clock["now_ms"] = 400
        worker.step(Batch(events=[event(10, fill_pct=20)]))
        clock["now_ms"] = 800
        worker.step(Batch(events=[event(20, fill_pct=30)]))
        assert forecasts() == {"cam-1": 10, "bin-2": 50}  # held: the last write was less than a second ago
        clock["now_ms"] = 1000
        worker.step(Batch())
        assert forecasts() == {"cam-1": 30, "bin-2": 50}  # the newest of the two held, the other kept
        worker.step(Batch(events=[event(30, device="bin-2", fill_pct=60)]))
        bus.close()
        worker.start()
        worker.stop()
        assert forecasts() == {"cam-1": 30, "bin-2": 60}
    finally:
        store.close()


def test_a_day_with_a_daylight_saving_change_has_the_minutes_it_really_had() -> None:
    berlin = ZoneInfo("Europe/Berlin")  # clocks went back on 2025-10-26: a 25-hour day

    def at_local(text: str) -> float:
        return datetime.fromisoformat(text).replace(tzinfo=berlin).timestamp() - T0_MS / 1000

    counting = Engine([Counting()], allowed_lateness_ms=0, time_zone="Europe/Berlin")
    out = counting.process([event(at_local("2025-10-26T00:00")), event(at_local("2025-10-27T00:30"))],
                           now_wall_ms=0)
    assert totals(out)[("2025-10-26", "cam-1", "air_sensor_minutes")] == 25 * 60
    assert totals(out)[("2025-10-27", "cam-1", "air_sensor_minutes")] == 30
