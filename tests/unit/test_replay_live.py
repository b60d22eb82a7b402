"""A replay of a recorded day gives exactly what the live pipeline gave that day, at every replay speed.

The live run is the pipeline of `citywatch up` (normalizer, in-process bus, processor worker, SQLite
store) with its clock driven by the messages' receive times: it steps as each message arrives and polls
idle at random intervals of 50 ms to 15 s in between (tests/support/city_day.py). The replays are
`Replayer.run` (what `citywatch replay` runs) over the same messages: as fast as possible and paced at
14,400x real time over the whole generated day, and at 1x real time over a 13-second window of it (in
which a beacon goes offline), against the live run of that window.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from citywatch.replay import Replayer, read_recording
from core.exposures import COUNTERS
from core.metrics import Metrics
from core.models import Violation
from store.base import ExposureQuery, ExposureSum, Store
from store.sqlite_store import SqliteStore
from tests.support.city_day import BEACON, CityDay, city_day, live_run


@pytest.fixture(scope="module")
def day() -> CityDay:
    return city_day()


@pytest.fixture(scope="module")
def live_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The live run's data directory: its SQLite store, closed after the run."""
    return tmp_path_factory.mktemp("live")


@pytest.fixture(scope="module")
def live(day: CityDay, live_dir: Path) -> tuple[list[Violation], Metrics]:
    rng = random.Random(5)
    return live_run(day.settings, day.messages, live_dir, lambda now_ms: now_ms + rng.randint(50, 15_000))


def assert_same(replayed: list[Violation], live: list[Violation]) -> None:
    """The same violation changes, as multisets: first in brief (a readable difference), then in full."""

    def brief(violations: list[Violation]) -> Counter[tuple[object, ...]]:
        return Counter((v.type, v.violation_id, v.status.value, v.start_time_ms, v.end_time_ms,
                        v.updated_time_ms) for v in violations)

    assert brief(replayed) == brief(live)
    assert Counter(msgspec.json.encode(v) for v in replayed) == Counter(msgspec.json.encode(v) for v in live)


def late_events(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("citywatch_late_events_total") or 0.0


def test_the_live_day_raises_every_kind_of_judgement(live):
    violations, metrics = live
    changes = {f"{v.type}/{v.status.value}" for v in violations}
    assert {"device_offline/open", "device_offline/cleared", "illegal_parking/open",
            "illegal_parking/cleared", "bin_lid_open/open", "bin_lid_open/cleared", "congestion/open",
            "congestion/cleared", "red_light/open", "speeding/open", "bin_overflow/open",
            "bin_overflow/cleared"} <= changes
    offline = Counter((v.device_id, v.status.value) for v in violations if v.type == "device_offline")
    # Every silence of the generated day: the beacon before its first window (never heard from), between
    # its windows and after the last; water-0001 never came back.
    assert offline == {(BEACON, "open"): 5, (BEACON, "cleared"): 4, ("bin-0201", "open"): 1,
                       ("bin-0201", "cleared"): 1, ("wc-0001", "open"): 1, ("wc-0001", "cleared"): 1,
                       ("site-0001", "open"): 1, ("site-0001", "cleared"): 1, ("water-0001", "open"): 1}
    assert late_events(metrics) > 0  # some messages arrived later than the allowed lateness


def test_a_full_speed_replay_of_the_recorded_day_gives_the_live_violations(day, live, tmp_path: Path):
    violations, metrics = live
    recording = tmp_path / "day.jsonl"
    day.write(recording)
    result = Replayer(day.settings).run(read_recording(recording))
    assert result.messages == len(day.messages)
    assert_same(result.violations, violations)
    assert result.late_events == late_events(metrics)


def test_a_replay_paced_at_14400x_gives_the_live_violations(day, live):
    violations, _ = live
    speed = 14_400.0
    # A clock that moves only when the replay sleeps: on a busy machine the real one can leave the replay
    # behind its schedule all along, so that it never sleeps and the pacing is not exercised.
    now_s = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now_s[0] += seconds

    result = Replayer(day.settings).run(day.messages, speed=speed, sleep=sleep, clock=lambda: now_s[0])
    recorded_s = (day.messages[-1].received_ms - day.messages[0].received_ms) / 1000
    assert len(slept) > 1 and sum(slept) == pytest.approx(recorded_s / speed)  # paced, not run flat out
    assert_same(result.violations, violations)


def test_a_1x_replay_of_a_window_gives_the_live_violations_on_time(day, tmp_path: Path):
    window = day.between("10:30:14", "10:30:27")  # the beacon reports until 10:30:20, then falls silent
    live_violations, _ = live_run(day.settings, window, tmp_path, lambda now_ms: now_ms + 100)
    emitted: list[tuple[float, Violation]] = []
    started = time.monotonic()
    paced = Replayer(day.settings).run(
        window, speed=1.0, on_violations=lambda changes: emitted.extend(
            (time.monotonic() - started, violation) for violation in changes))
    assert_same(paced.violations, live_violations)
    assert_same(Replayer(day.settings).run(window).violations, live_violations)
    [(emitted_s, offline)] = [(at_s, v) for at_s, v in emitted if v.type == "device_offline"]
    assert offline.device_id == BEACON
    # Out when it fell due in the recording's time, not before (nor at the end of the replay).
    due_s = (offline.start_time_ms - window[0].received_ms) / 1000
    assert due_s <= emitted_s < (window[-1].received_ms - window[0].received_ms) / 1000


# The generated day is 2025-11-26 in the city's time zone; its late messages may fall on the days around.
DAYS = ("2025-11-25", "2025-11-26", "2025-11-27")


def exposure_totals(store: Store) -> dict[str, list[ExposureSum]]:
    """Each local day's totals per device and counter."""
    return {day: store.exposure_sums(ExposureQuery(day, day, "device")) for day in DAYS}


def test_a_replay_stores_the_exposure_totals_of_the_live_day_and_replaying_it_again_changes_none(
        day, live, live_dir: Path, tmp_path: Path):
    live_store = SqliteStore.in_directory(live_dir)
    try:
        live_totals = exposure_totals(live_store)
        # No total fell outside those days.
        assert live_store.exposure_sums(ExposureQuery("2000-01-01", "2099-12-31", "city")) == \
            live_store.exposure_sums(ExposureQuery(DAYS[0], DAYS[-1], "city"))
    finally:
        live_store.close()
    counted = {total.counter for totals in live_totals.values() for total in totals}
    # Every denominator but odour minutes out of standard (no toilet smells that day) was counted.
    assert counted == COUNTERS - {"odour_out_of_standard_minutes"}
    recording = tmp_path / "day.jsonl"
    day.write(recording)
    store = SqliteStore.in_directory(tmp_path / "replay")
    try:
        Replayer(day.settings, store=store).run(read_recording(recording))
        assert exposure_totals(store) == live_totals
        # The same recording again into the same store: totals are rewritten, never added to.
        Replayer(day.settings, store=store).run(read_recording(recording))
        assert exposure_totals(store) == live_totals
    finally:
        store.close()
