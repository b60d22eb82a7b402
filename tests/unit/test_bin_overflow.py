"""Bin overflow through the engine: the timelines a sanitation dispatcher would recognise."""

from __future__ import annotations

from core.models import Severity, ViolationStatus
from core.settings import BinOverflowSettings, DeviceSettings
from processors.engine import Engine
from processors.rules.bin_overflow import BinOverflowRule
from tests.support.delivery import assert_same_regardless_of_delivery
from tests.support.events import reading
from tests.support.rules import run_all


def run(events, settings=None, lateness_ms=2000):
    engine = Engine([BinOverflowRule(settings or BinOverflowSettings())], allowed_lateness_ms=lateness_ms)
    out = engine.process(events, now_wall_ms=0)
    out.extend(engine.drain())
    return out.violations


def fills(*values, device="bin-1", step_s=600):
    return [reading(device, i * step_s, fill_pct=value) for i, value in enumerate(values)]


def test_two_readings_at_threshold_open_one_violation_with_evidence():
    events = fills(50, 90, 90.5)
    [opened] = run(events)
    assert opened.type == "bin_overflow"
    assert opened.status is ViolationStatus.OPEN
    assert opened.start_time_ms == events[1].event_time_ms
    assert opened.evidence.event_ids == [events[1].event_id, events[2].event_id]
    assert opened.evidence.details["fill_pct"] == [90.0, 90.5]
    assert opened.severity is Severity.MEDIUM


def test_one_reading_above_threshold_is_not_enough():
    assert run(fills(50, 95, 80, 95, 60)) == []


def test_just_below_threshold_never_opens():
    assert run(fills(89.9, 89.9, 89.9)) == []


def test_emptying_below_clear_threshold_clears_with_end_time():
    events = fills(92, 95, 97, 29.9)
    opened, cleared = run(events)
    assert cleared.violation_id == opened.violation_id
    assert cleared.status is ViolationStatus.CLEARED
    assert cleared.end_time_ms == events[3].event_time_ms
    assert events[3].event_id in cleared.evidence.event_ids


def test_hovering_between_thresholds_neither_clears_nor_reopens():
    violations = run(fills(92, 95, 60, 93, 95, 30, 91, 96))
    assert [v.status for v in violations] == [ViolationStatus.OPEN]


def test_full_bin_is_high_severity():
    [opened] = run(fills(99, 100))
    assert opened.severity is Severity.HIGH


def test_each_incident_gets_its_own_deterministic_id():
    violations = run(fills(95, 95, 10, 95, 95, 10))
    ids = [v.violation_id for v in violations]
    assert len(set(ids)) == 2 and ids[0] == ids[1] and ids[2] == ids[3]
    assert ids == [v.violation_id for v in run(fills(95, 95, 10, 95, 95, 10))]


def test_thresholds_are_configurable():
    settings = BinOverflowSettings(open_pct=80, clear_pct=20, consecutive=3)
    assert run(fills(85, 85), settings) == []
    opened, cleared = run(fills(85, 85, 85, 25, 19), settings)
    assert opened.status is ViolationStatus.OPEN and cleared.status is ViolationStatus.CLEARED


def test_readings_without_fill_level_are_ignored():
    events = [reading("bin-1", 0, fill_pct=95), reading("bin-1", 10, battery_pct=50),
              reading("bin-1", 20, fill_pct=96)]
    assert len(run(events)) == 1


def test_bins_are_judged_independently():
    events = [reading("bin-1", 0, fill_pct=95), reading("bin-2", 1, fill_pct=95),
              reading("bin-1", 2, fill_pct=20), reading("bin-2", 3, fill_pct=95)]
    [opened] = run(events)
    assert opened.device_id == "bin-2"


def test_shuffled_and_duplicated_delivery_gives_the_in_order_result():
    in_order = fills(40, 92, 95, 97, 10, 50, 91, 99, 5, step_s=0.2)
    expected = run_all([BinOverflowRule(BinOverflowSettings())], in_order)
    assert len(expected.violations) == 4
    assert_same_regardless_of_delivery(lambda: [BinOverflowRule(BinOverflowSettings())], in_order, expected,
                                       seeds=20)


def test_reading_older_than_one_already_judged_is_late_and_not_judged():
    engine = Engine([BinOverflowRule(BinOverflowSettings())], allowed_lateness_ms=0)
    engine.process(fills(95, 96), now_wall_ms=0)
    out = engine.process([reading("bin-1", -5, fill_pct=10)], now_wall_ms=0)
    assert out.violations == [] and len(out.late_events) == 1


def test_a_device_override_in_the_registry_wins_over_the_rule_default():
    class Registry:
        def get(self, device_id):
            if device_id == "bin-small":
                return DeviceSettings(device_id="bin-small", kind="bin",
                                      thresholds={"bin_overflow": {"open_pct": 75, "clear_pct": 10}})
            return None

    rule = BinOverflowRule(BinOverflowSettings(), Registry())
    engine = Engine([rule], allowed_lateness_ms=0)
    events = [*fills(80, 80, 20, device="bin-small"), *fills(80, 80, device="bin-big")]
    out = engine.process(events, now_wall_ms=0)
    [opened] = out.violations  # 20% does not clear bin-small: its clear threshold is 10%
    assert opened.device_id == "bin-small" and opened.evidence.details["open_pct"] == 75
