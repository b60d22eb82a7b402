"""Wrong way, speeding and no helmet: rules judged per camera track."""

from __future__ import annotations

from core.models import Severity
from tests.support.traffic import local_s, run, same_regardless_of_delivery, track

WRONG = ["wrong_way"]
ONE_WAY = ["one_way_north"]  # allowed heading 0: towards +y


def moving(at_s, x, y, track_id="b1", label="e-bike", zones=ONE_WAY, **kwargs):
    return track(at_s, track_id, label=label, zones=zones, position=[x, y], **kwargs)


def test_riding_against_the_one_way_over_the_minimum_distance_is_one_violation():
    events = [moving(0, 0, 20), moving(1, 0, 17), moving(2, 0.5, 14.9), moving(3, 0, 10), moving(4, 0, 0)]
    [violation] = run(events, WRONG)
    assert violation.type == "wrong_way" and violation.severity is Severity.HIGH
    assert violation.evidence.event_ids == [events[0].event_id, events[2].event_id]
    details = violation.evidence.details
    assert details["allowed_heading_deg"] == 0 and details["angle_deg"] > 170
    assert details["code"] == "1301" and details["points"] == 3


def test_the_right_way_short_moves_and_jitter_never_count():
    right_way = [moving(i, 0, 2 * i) for i in range(10)]
    jitter = [moving(i, (-1) ** i * 0.5, 20 - 0.2 * i, "b2") for i in range(10)]
    outside = [moving(i, 0, 20 - 3 * i, "b3", zones=[]) for i in range(5)]
    assert run(right_way + jitter + outside, WRONG) == []


def test_borderline_angle_and_distance():
    # 120 degrees off the allowed heading exactly is not more than 120.
    exactly = [moving(0, 0, 0), moving(1, 5 * 0.8660254037844387, -2.5)]
    beyond = [moving(0, 0, 0), moving(1, 5 * 0.8571673007021123, -2.5760575)]  # ~121 degrees, 5.0 long
    short = [moving(0, 0, 0), moving(1, 0, -4.99)]
    assert run(exactly, WRONG) == [] and len(run(beyond, WRONG)) == 1 and run(short, WRONG) == []


def test_turning_round_after_riding_the_right_way_is_caught():
    events = [moving(0, 0, 0), moving(1, 0, 6), moving(2, 0, 12), moving(3, 0, 6), moving(4, 0, 0)]
    [violation] = run(events, WRONG)
    # The wrong-way travel began where the right-way travel was last confirmed (the turning point).
    assert violation.start_time_ms == events[2].event_time_ms


def test_wrong_way_starts_where_the_travel_began_whatever_distance_judges_it():
    events = [moving(0, 0, 20), moving(1, 0, 17), moving(2, 0, 14), moving(3, 0, 11), moving(4, 0, 8)]
    [default] = run(events, WRONG)
    [longer] = run(events, WRONG, rule_settings={"wrong_way": {"min_distance": 11}})
    assert default.updated_time_ms < longer.updated_time_ms
    assert default.start_time_ms == longer.start_time_ms == events[0].event_time_ms


def test_wrong_way_shuffled_and_duplicated():
    events = [moving(i * 0.5, 0, 30 - 2 * i) for i in range(8)] + [
        moving(i * 0.5, 0, 2 * i, "ok") for i in range(8)]
    [violation] = same_regardless_of_delivery(events, WRONG)
    assert violation.evidence.details["track_id"] == "b1"


SPEED = ["speeding"]


def speed(at_s, kmh, track_id="c1", zones=("main_road",), **kwargs):
    return track(at_s, track_id, zones=zones, speed_kmh=kmh, **kwargs)


def test_band_boundaries_on_a_60_limit():
    assert run([speed(0, 66)], SPEED) == []  # exactly 10% over
    cases = {66.01: Severity.LOW, 72: Severity.MEDIUM, 89.99: Severity.MEDIUM, 90: Severity.HIGH,
             119.9: Severity.HIGH, 120: Severity.CRITICAL, 121: Severity.CRITICAL}
    for kmh, severity in cases.items():
        [violation] = run([speed(0, kmh)], SPEED)
        assert violation.severity is severity, kmh
    [violation] = run([speed(0, 75)], SPEED)
    assert violation.evidence.details["limit_kmh"] == 60 and violation.evidence.details["over_pct"] == 25
    assert violation.evidence.details["points"] == 3 and violation.evidence.details["band_pct"] == 20


def test_one_violation_per_track_raised_only_when_a_higher_band_is_reached():
    events = [speed(0, 70), speed(1, 68), speed(2, 70), speed(3, 80), speed(4, 75), speed(5, 95),
              speed(6, 50)]
    violations = run(events, SPEED)
    assert [v.severity for v in violations] == [Severity.LOW, Severity.MEDIUM, Severity.HIGH]
    assert len({v.violation_id for v in violations}) == 1
    assert {v.start_time_ms for v in violations} == {events[0].event_time_ms}
    assert violations[-1].evidence.event_ids == [events[0].event_id, events[3].event_id, events[5].event_id]


def test_school_hours_limit_and_zone_tolerance_override():
    school = local_s("2025-11-26T08:00")  # Wednesday, 07:30-08:30 is school hours: limit 30
    [violation] = run([speed(school, 34)], SPEED)
    assert violation.evidence.details["limit_kmh"] == 30
    assert run([speed(local_s("2025-11-26T09:00"), 34)], SPEED) == []
    assert run([speed(0, 40, zones=["slow_lane"])], SPEED) == []
    assert len(run([speed(0, 40.1, zones=["slow_lane"])], SPEED)) == 1  # tolerance 0 in that zone


def test_speeding_shuffled_and_duplicated():
    events = [speed(i * 0.3, 60 + 5 * i, "c1") for i in range(10)]
    events += [speed(i * 0.3, 50, "c2") for i in range(5)]
    expected = same_regardless_of_delivery(events, SPEED)
    assert [v.severity for v in expected] == [Severity.LOW, Severity.MEDIUM, Severity.HIGH]


HELMET = ["no_helmet"]


def test_rider_without_helmet_once_per_track_with_points_by_vehicle():
    events = [track(0, "m1", label="motorcycle", helmet=False),
              track(1, "m1", label="motorcycle", helmet=False),
              track(0, "e1", label="e-bike", helmet=False), track(0, "e2", label="e-bike", helmet=True),
              track(0, "e3", label="e-bike"), track(0, "c1", label="car", helmet=False)]
    violations = run(events, HELMET)
    assert [(v.evidence.details["track_id"], v.evidence.details["points"]) for v in violations] == [
        ("m1", 1), ("e1", 0)]


def test_consecutive_setting_filters_a_flickering_classifier():
    flicker = [track(i, "e1", label="e-bike", helmet=i % 2 == 0) for i in range(6)]
    steady = [track(i, "e2", label="e-bike", helmet=False) for i in range(2)]
    settings = {"no_helmet": {"consecutive": 2}}
    assert run(flicker, HELMET, rule_settings=settings) == []
    assert len(run(steady, HELMET, rule_settings=settings)) == 1


def test_helmet_shuffled_and_duplicated():
    events = [track(i * 0.2, f"e{i % 3}", label="e-bike", helmet=i % 3 != 0) for i in range(12)]
    [violation] = same_regardless_of_delivery(events, HELMET)
    assert violation.evidence.details["track_id"] == "e0"


def test_no_helmet_starts_at_the_first_message_of_the_run():
    events = [track(0, "e1", label="e-bike", helmet=True), track(1, "e1", label="e-bike", helmet=False),
              track(2, "e1", label="e-bike", helmet=False), track(3, "e1", label="e-bike", helmet=False)]
    [violation] = run(events, HELMET, rule_settings={"no_helmet": {"consecutive": 3}})
    assert violation.start_time_ms == events[1].event_time_ms
    assert violation.updated_time_ms == events[3].event_time_ms


def test_traffic_thresholds_per_kind_zone_tag_device_and_camera_zone():
    from core.settings import DeviceSettings
    from tests.support.rules import Registry

    events = [speed(0, 46, "c1", zones=("main_road",))]  # 60 km/h road: not speeding at 46
    fast = [speed(0, 70, "c1", zones=("main_road",))]  # 16.7% over 60
    assert len(run(fast, SPEED)) == 1 and run(events, SPEED) == []
    by_kind = {"kind_thresholds": {"track": {"speeding": {"tolerance_pct": 20}}}}
    assert run(fast, SPEED, rule_settings=by_kind) == []
    tagged = Registry(DeviceSettings(device_id="cam-1", kind="track", tags={"zone": "school"}))
    by_zone_tag = {**by_kind, "zone_thresholds": {"school": {"speeding": {"tolerance_pct": 5}}}}
    assert len(run(fast, SPEED, rule_settings=by_zone_tag, devices=tagged)) == 1
    own = Registry(DeviceSettings(device_id="cam-1", kind="track", tags={"zone": "school"},
                                  thresholds={"speeding": {"tolerance_pct": 30}}))
    assert run(fast, SPEED, rule_settings=by_zone_tag, devices=own) == []
    # The camera zone's own override (slow_lane: tolerance 0) wins over the device's.
    slow = [speed(0, 40.5, "c2", zones=("slow_lane",))]
    assert len(run(slow, SPEED, rule_settings=by_zone_tag, devices=own)) == 1
