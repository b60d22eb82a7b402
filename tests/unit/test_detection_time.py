"""When citywatch decided a violation (`detected_time_ms`): the event time at which the rule opened it,
set once for every rule where the engine receives the open state, and kept through updates, clearing, a
restart from a snapshot and a replay."""

from __future__ import annotations

import csv
import io

import msgspec

from api.access.keys import Scope
from core.models import ViolationStatus
from core.sanitation_settings import BinFireSettings
from processors.engine import Engine
from processors.rules.bin_fire import BinFireRule
from tests.support.alerts import alert_api, bearer, violation
from tests.support.events import T0_MS, reading
from tests.support.rules import run
from tests.support.traffic import run as run_traffic
from tests.support.traffic import track


def fire_then_cool() -> list:
    hot = [reading("bin-1", i * 60, temperature_c=70) for i in range(3)]
    return [*hot, reading("bin-1", 240, temperature_c=20)]


def test_a_level_rule_violation_is_detected_when_it_opened_and_keeps_that_when_it_clears():
    opened, cleared = run(BinFireRule(BinFireSettings(consecutive=3)), fire_then_cool())
    # It began with the first hot reading, was decided on the third, and cleared on the cool one.
    assert opened.start_time_ms == T0_MS
    assert opened.detected_time_ms == opened.updated_time_ms == T0_MS + 120_000
    assert cleared.status is ViolationStatus.CLEARED
    assert (cleared.detected_time_ms, cleared.updated_time_ms) == (T0_MS + 120_000, T0_MS + 240_000)


def test_a_parked_car_is_detected_when_the_dwell_ran_out_not_at_its_last_message():
    events = [track(0, "car1", zones=["sidewalk_west"], stationary=True),
              track(450, "car1", zones=["sidewalk_west"], stationary=True), track(2000, "other")]
    opened, cleared = run_traffic(events, ["illegal_parking"])
    assert opened.detected_time_ms == opened.updated_time_ms
    assert opened.detected_time_ms not in {e.event_time_ms for e in events}  # a timer's time
    assert cleared.detected_time_ms == opened.detected_time_ms < cleared.updated_time_ms


def test_a_speeding_violation_re_issued_at_a_higher_band_keeps_its_first_detection():
    events = [track(0, "c1", zones=["main_road"], speed_kmh=70),
              track(1, "c1", zones=["main_road"], speed_kmh=80),
              track(2, "c1", zones=["main_road"], speed_kmh=95)]
    states = run_traffic(events, ["speeding"])
    assert len(states) == 3 and len({v.violation_id for v in states}) == 1
    assert [v.updated_time_ms for v in states] == [T0_MS, T0_MS + 1000, T0_MS + 2000]
    assert {v.detected_time_ms for v in states} == {T0_MS}


def test_detection_survives_a_restart_from_a_snapshot_and_a_replay_gives_the_same():
    events = fire_then_cool()
    engine = Engine([BinFireRule(BinFireSettings(consecutive=3))], allowed_lateness_ms=0)
    [opened] = engine.process(events[:3], now_wall_ms=0).violations
    restarted = Engine([BinFireRule(BinFireSettings(consecutive=3))], allowed_lateness_ms=0)
    restarted.restore(engine.snapshot())
    out = restarted.process(events[3:], now_wall_ms=0)
    out.extend(restarted.drain())
    [cleared] = out.violations
    assert cleared.detected_time_ms == opened.detected_time_ms == T0_MS + 120_000
    assert run(BinFireRule(BinFireSettings(consecutive=3)), events) == [opened, cleared]


def test_every_violation_answer_carries_the_detection_time(tmp_path):
    """The single violation, the list and both exports; empty for a violation stored before it was kept."""
    detected, cleared = run(BinFireRule(BinFireSettings(consecutive=3)), fire_then_cool())
    legacy = msgspec.structs.replace(violation(1), detected_time_ms=None)
    api = alert_api(tmp_path)
    try:
        api.store.write_violations([detected, cleared, legacy])
        api.store.flush()
        http = api.client()
        headers = bearer(api.key(Scope.VIOLATIONS_READ))
        single = http.get(f"/v1/violations/{cleared.violation_id}", headers=headers).json()
        assert (single["status"], single["detected_time_ms"]) == ("cleared", T0_MS + 120_000)
        listed = {v["violation_id"]: v["detected_time_ms"]
                  for v in http.get("/v1/violations", headers=headers).json()["items"]}
        assert listed == {cleared.violation_id: T0_MS + 120_000, legacy.violation_id: None}
        rows = {row["violation_id"]: row["detected_time_ms"] for row in csv.DictReader(io.StringIO(
            http.get("/v1/exports/violations.csv", headers=headers).text))}
        assert rows == {cleared.violation_id: str(T0_MS + 120_000), legacy.violation_id: ""}
        features = http.get("/v1/exports/violations.geojson", headers=headers).json()["features"]
        assert {f["id"]: f["properties"]["detected_time_ms"] for f in features} == listed
    finally:
        api.close()
