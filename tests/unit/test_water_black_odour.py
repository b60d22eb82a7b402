"""Black-odorous water: each indicator's borders, shallow water, three readings in a row, clearing."""

from __future__ import annotations

import pytest

from core.models import Severity, ViolationStatus
from core.sanitation_settings import WaterBlackOdourSettings
from processors.rules.water_black_odour import Grade, WaterBlackOdourRule, classify
from tests.support.events import reading
from tests.support.rules import run, tagged

S = WaterBlackOdourSettings()
CLEAN = {"transparency_cm": 60, "do_mgl": 6.0, "orp_mv": 200, "nh3n_mgl": 1.0}


def grade(**values):
    judged = classify(reading("probe-1", 0, kind="water", **{**CLEAN, **values}), S)
    assert judged is not None
    return judged[0]


@pytest.mark.parametrize(("values", "expected"), [
    ({}, Grade.NOT),
    ({"transparency_cm": 25.1}, Grade.NOT), ({"transparency_cm": 25}, Grade.LIGHT),
    ({"transparency_cm": 10}, Grade.LIGHT), ({"transparency_cm": 9.9}, Grade.HEAVY),
    ({"do_mgl": 2.01}, Grade.NOT), ({"do_mgl": 2.0}, Grade.LIGHT),
    ({"do_mgl": 0.2}, Grade.LIGHT), ({"do_mgl": 0.19}, Grade.HEAVY),
    ({"orp_mv": 50.1}, Grade.NOT), ({"orp_mv": 50}, Grade.LIGHT),
    ({"orp_mv": -200}, Grade.LIGHT), ({"orp_mv": -200.1}, Grade.HEAVY),
    ({"nh3n_mgl": 7.9}, Grade.NOT), ({"nh3n_mgl": 8.0}, Grade.LIGHT),
    ({"nh3n_mgl": 15}, Grade.LIGHT), ({"nh3n_mgl": 15.1}, Grade.HEAVY),
    ({"do_mgl": 1.0, "nh3n_mgl": 20}, Grade.HEAVY),  # the worst indicator decides
])
def test_indicator_borders(values, expected):
    assert grade(**values) is expected


def test_shallow_water_uses_40_percent_of_the_depth_for_transparency():
    # 20 cm deep: the limit is 8 cm instead of 25 cm.
    assert grade(transparency_cm=9, depth_cm=20) is Grade.NOT
    assert grade(transparency_cm=8, depth_cm=20) is Grade.LIGHT
    assert grade(transparency_cm=7.9, depth_cm=20) is Grade.HEAVY
    assert grade(transparency_cm=20, depth_cm=25) is Grade.LIGHT  # 25 cm is not shallow


def test_a_reading_without_indicators_is_not_judged():
    assert classify(reading("probe-1", 0, kind="water", battery_pct=80), S) is None


def water(at_s, device="probe-1", **values):
    return tagged(reading(device, at_s, kind="water", **{**CLEAN, **values}), water_body="futian-river",
                  district="futian", department="water")


def test_three_black_readings_in_a_row_flag_the_body_with_the_worst_grade():
    events = [water(0, do_mgl=1.0), water(3600, do_mgl=0.1), water(7200, nh3n_mgl=9)]
    [opened] = run(WaterBlackOdourRule(S), events)
    assert opened.type == "water_black_odour" and opened.severity is Severity.HIGH
    assert opened.evidence.event_ids == [e.event_id for e in events]
    assert opened.evidence.details["grades"] == ["light", "heavy", "light"]
    assert opened.evidence.details["water_body"] == "futian-river"
    assert opened.tags["department"] == "water"


def test_two_in_a_row_are_not_enough():
    events = [water(0, do_mgl=1.0), water(3600, do_mgl=1.0), water(7200), water(10800, do_mgl=1.0)]
    assert run(WaterBlackOdourRule(S), events) == []


def test_probes_of_one_body_count_together_and_three_clean_readings_clear():
    events = [water(0, device="p1", orp_mv=0), water(10, device="p2", orp_mv=0),
              water(20, device="p1", orp_mv=0), water(30), water(40), water(50, device="p2")]
    opened, cleared = run(WaterBlackOdourRule(S), events)
    assert opened.severity is Severity.MEDIUM and cleared.status is ViolationStatus.CLEARED
    # It ended with the first clean reading of the clearing run; the third one confirmed it.
    assert cleared.end_time_ms == events[3].event_time_ms
    assert cleared.updated_time_ms == events[5].event_time_ms


def test_thresholds_are_overridable_per_probe():
    from core.settings import DeviceSettings
    from tests.support.rules import Registry

    registry = Registry(DeviceSettings(device_id="strict", kind="water",
                                       thresholds={"water_black_odour": {"do_light_mgl": 3.0}}))
    rule = WaterBlackOdourRule(S, registry)
    events = [water(i * 60, device="strict", do_mgl=2.5) for i in range(3)]
    assert len(run(rule, events)) == 1
    lax = [water(i * 60, device="lax", do_mgl=2.5) for i in range(3)]
    assert run(WaterBlackOdourRule(S, registry), lax) == []
