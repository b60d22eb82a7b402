"""Congestion on a detector approach: open after 3 congested intervals, clear after 2 free ones."""

from __future__ import annotations

from core.models import Severity, ViolationStatus
from processors.engine import Engine
from tests.support.events import T0_MS, reading
from tests.support.traffic import rules, run, same_regardless_of_delivery

JAM = ["congestion"]


def readings(*pairs, approach="north", device="det-1", step_s=60, start_s=0):
    return [reading(device, start_s + i * step_s, kind="detector", intersection="ix-1", approach=approach,
                    occupancy_pct=occupancy, speed_kmh=speed, flow_veh_h=600, interval_s=step_s)
            for i, (occupancy, speed) in enumerate(pairs)]


JAMMED, FREE = (45, 8), (12, 40)


def test_three_congested_intervals_open_two_free_clear_with_peak_and_duration():
    events = readings(FREE, JAMMED, (30, 15), (70, 5), JAMMED, FREE, JAMMED, FREE, FREE, FREE)
    opened, cleared = run(events, JAM)
    # A reading's time is the end of its interval: the jam began where the first congested interval
    # began (the end of the free one before it), and ended where the first free interval of the
    # clearing run began.
    assert opened.status is ViolationStatus.OPEN and opened.start_time_ms == T0_MS
    assert opened.updated_time_ms == T0_MS + 180_000 and opened.severity is Severity.HIGH
    assert opened.evidence.event_ids == [e.event_id for e in events[1:4]]
    assert opened.evidence.details["approach"] == "north"
    assert cleared.violation_id == opened.violation_id and cleared.status is ViolationStatus.CLEARED
    assert cleared.end_time_ms == T0_MS + 360_000 and cleared.updated_time_ms == T0_MS + 480_000
    details = cleared.evidence.details
    assert details["peak_occupancy_pct"] == 70 and details["min_speed_kmh"] == 5
    assert details["duration_s"] == 360 and details["congested_intervals"] == 5


def test_borderlines_of_each_threshold():
    assert len(run(readings((30, 15), (30, 15), (30, 15)), JAM)) == 1
    assert run(readings((29.9, 15), (30, 15), (30, 15)), JAM) == []
    assert run(readings((30, 15.1), (30, 15), (30, 15)), JAM) == []
    assert run(readings(JAMMED, JAMMED, FREE, JAMMED, JAMMED), JAM) == []


def test_hovering_never_flaps():
    events = readings(JAMMED, JAMMED, JAMMED, FREE, JAMMED, FREE, JAMMED, JAMMED)
    [opened] = run(events, JAM)
    assert opened.status is ViolationStatus.OPEN


def test_a_silent_detector_breaks_the_run():
    events = readings(JAMMED, JAMMED) + readings(JAMMED, start_s=400)
    assert run(events, JAM) == []


def test_a_missing_report_is_not_a_congested_interval():
    # Congested, congested, (no report), congested: only two intervals in a row were seen congested.
    events = readings(JAMMED, JAMMED) + readings(JAMMED, start_s=180)
    assert run(events, JAM) == []
    # The same with every report present opens.
    assert len(run(readings(JAMMED, JAMMED, JAMMED, JAMMED), JAM)) == 1


def test_a_missing_report_breaks_the_clearing_run_too():
    opening = readings(JAMMED, JAMMED, JAMMED)
    free_missing_free = readings(FREE, start_s=180) + readings(FREE, start_s=300)
    [opened] = run(opening + free_missing_free, JAM)
    assert opened.status is ViolationStatus.OPEN


def test_without_interval_s_the_detectors_registered_interval_tells_a_missing_report():
    from core.settings import DeviceSettings
    from tests.support.rules import Registry

    def bare(at_s):
        return reading("det-1", at_s, kind="detector", intersection="ix-1", approach="north",
                       occupancy_pct=45, speed_kmh=8)

    registry = Registry(DeviceSettings(device_id="det-1", kind="detector", expected_interval_s=30))
    # 60 s apart: every reading present for default_interval_s (60), two reports missing each time for
    # a detector that reports every 30 s.
    events = [bare(0), bare(60), bare(120)]
    assert len(run(events, JAM)) == 1
    assert run(events, JAM, devices=registry) == []


def test_approaches_are_independent_and_thresholds_overridable_per_device():
    events = readings(JAMMED, JAMMED, approach="north") + readings(JAMMED, JAMMED, approach="east", start_s=1)
    assert run(events, JAM) == []
    settings = {"congestion": {"open_intervals": 2}}
    assert len(run(events, JAM, rule_settings=settings)) == 2


def test_shuffled_and_duplicated_delivery():
    events = readings(JAMMED, JAMMED, JAMMED, FREE, FREE, JAMMED, JAMMED, JAMMED, FREE, step_s=1)
    expected = same_regardless_of_delivery(events, JAM)
    assert [v.status.value for v in expected] == ["open", "cleared", "open"]


def test_state_is_dropped_while_traffic_flows():
    engine = Engine(rules(JAM), allowed_lateness_ms=0)
    engine.process(readings(*[FREE] * 5), now_wall_ms=0)
    assert len(engine.states["congestion"]) == 0
