"""Bin fire, bin knocked over and low battery: thresholds, borders, hysteresis, overrides, order."""

from __future__ import annotations

from core.models import Severity, ViolationStatus
from core.sanitation_settings import BinFireSettings, BinTiltSettings, LowBatterySettings
from core.settings import DeviceSettings
from processors.engine import Engine
from processors.rules.bin_fire import BinFireRule
from processors.rules.bin_tilt import BinTiltRule
from processors.rules.low_battery import LowBatteryRule
from tests.support.delivery import assert_same_regardless_of_delivery
from tests.support.events import reading
from tests.support.rules import Registry, run, run_all, tagged


def temperatures(*values, device="bin-1", step_s=300):
    return [reading(device, i * step_s, temperature_c=value) for i, value in enumerate(values)]


def test_fire_opens_at_exactly_60_and_is_critical_with_evidence():
    events = temperatures(25, 60.0)
    [opened] = run(BinFireRule(BinFireSettings()), events)
    assert opened.type == "bin_fire" and opened.severity is Severity.CRITICAL
    assert opened.status is ViolationStatus.OPEN
    assert opened.evidence.event_ids == [events[1].event_id]
    assert opened.evidence.details["values"] == [60.0] and opened.evidence.details["open_level"] == 60.0


def test_fire_does_not_open_just_below_60():
    assert run(BinFireRule(BinFireSettings()), temperatures(59.9, 59.9, 59.9)) == []


def test_fire_clears_below_clear_level_only():
    opened, cleared = run(BinFireRule(BinFireSettings()), temperatures(65, 55, 50.0, 49.9))
    assert cleared.violation_id == opened.violation_id and cleared.status is ViolationStatus.CLEARED
    assert cleared.end_time_ms == temperatures(65, 55, 50.0, 49.9)[3].event_time_ms


def test_fire_violation_carries_the_event_tags_and_location():
    event = tagged(reading("bin-1", 0, temperature_c=70), grid="FT-11", district="futian",
                   department="sanitation")
    [opened] = run(BinFireRule(BinFireSettings()), [event])
    assert opened.tags == {"grid": "FT-11", "district": "futian", "department": "sanitation"}


def test_tilt_border_at_45_degrees_and_upright_clears():
    rule = BinTiltRule(BinTiltSettings())
    assert run(rule, [reading("bin-1", i, tilt_deg=44.9) for i in range(3)]) == []
    events = [reading("bin-1", 0, tilt_deg=45.0), reading("bin-1", 60, tilt_deg=88),
              reading("bin-1", 120, tilt_deg=3)]
    opened, cleared = run(BinTiltRule(BinTiltSettings()), events)
    assert opened.type == "bin_tilt" and opened.start_time_ms == events[0].event_time_ms
    assert cleared.status is ViolationStatus.CLEARED


def test_low_battery_border_applies_to_any_kind():
    rule = LowBatteryRule(LowBatterySettings())
    events = [reading("air-1", 0, kind="air", battery_pct=20.1),
              reading("air-1", 60, kind="air", battery_pct=20),
              reading("odour-1", 0, kind="odour", battery_pct=5)]
    violations = run(rule, events)
    assert sorted(v.device_id for v in violations) == ["air-1", "odour-1"]
    assert all(v.type == "low_battery" and v.severity is Severity.LOW for v in violations)


def test_low_battery_clears_when_replaced():
    events = [reading("bin-1", 0, battery_pct=15), reading("bin-1", 60, battery_pct=30),
              reading("bin-1", 120, battery_pct=100)]
    opened, cleared = run(LowBatteryRule(LowBatterySettings()), events)
    assert opened.evidence.event_ids == [events[0].event_id]
    assert cleared.status is ViolationStatus.CLEARED and cleared.end_time_ms == events[2].event_time_ms


def test_device_override_beats_zone_override_beats_default():
    registry = Registry(
        DeviceSettings(device_id="bin-own", kind="bin", tags={"zone": "market"},
                       thresholds={"bin_fire": {"open_c": 80}}),
        DeviceSettings(device_id="bin-zone", kind="bin", tags={"zone": "market"}),
        DeviceSettings(device_id="bin-plain", kind="bin"),
    )
    zones = {"market": {"bin_fire": {"open_c": 70}}}
    rule = BinFireRule(BinFireSettings(), registry, zones)
    events = [reading(device, 0, temperature_c=72) for device in ("bin-own", "bin-zone", "bin-plain")]
    opened = {v.device_id: v.evidence.details["open_level"] for v in run(rule, events)}
    assert opened == {"bin-zone": 70, "bin-plain": 60}


def test_shuffled_duplicated_delivery_gives_the_in_order_result():
    in_order = temperatures(20, 61, 70, 40, 62, 30, 64, step_s=0.1)
    expected = run_all([BinFireRule(BinFireSettings())], in_order)
    assert len(expected.violations) == 5
    assert_same_regardless_of_delivery(lambda: [BinFireRule(BinFireSettings())], in_order, expected)


def test_late_reading_is_not_judged():
    engine = Engine([BinFireRule(BinFireSettings())], allowed_lateness_ms=0)
    engine.process(temperatures(20, 25), now_wall_ms=0)
    out = engine.process([reading("bin-1", -10, temperature_c=90)], now_wall_ms=0)
    assert out.violations == [] and len(out.late_events) == 1


def test_reading_without_the_attribute_leaves_state_alone():
    events = [reading("bin-1", 0, temperature_c=70), reading("bin-1", 10, battery_pct=80),
              reading("bin-1", 20, temperature_c=40)]
    assert [v.status for v in run(BinFireRule(BinFireSettings()), events)] == [
        ViolationStatus.OPEN, ViolationStatus.CLEARED]


def test_a_tilt_switch_opens_and_clears_without_an_angle():
    events = [reading("bin-1", 0, tilted=False), reading("bin-1", 60, tilted=True),
              reading("bin-1", 120, tilted=True), reading("bin-1", 180, tilted=False)]
    opened, cleared = run(BinTiltRule(BinTiltSettings()), events)
    assert opened.start_time_ms == events[1].event_time_ms
    assert opened.evidence.details["source"] == "tilt switch"
    assert cleared.end_time_ms == events[3].event_time_ms
