"""Red-light running and pedestrians against red, as timelines an officer would recognise."""

from __future__ import annotations

from core.models import Severity
from tests.support.traffic import TRAFFIC, run, same_regardless_of_delivery, signal, track, traffic_settings

RED = ["red_light"]


def cycle(red_at: float = 10.0) -> list:
    """North goes green at 0, amber at red_at - 3, red at red_at."""
    return [signal(0, "north_through", "green"), signal(red_at - 3, "north_through", "amber"),
            signal(red_at, "north_through", "red")]


def test_entering_the_stop_line_well_after_red_is_one_violation_with_its_evidence():
    events = [*cycle(), track(9, "t1"), track(11, "t1", zones=["stop_north"], plate="粤B12345",
                                                snapshot_url="http://nvr/s.jpg", clip_url="http://nvr/c.mp4"),
              track(12, "t1", zones=["stop_north"]), track(13, "t1", zones=[]),
              track(14, "t1", zones=["stop_north"])]
    [violation] = run(events, RED)
    assert violation.type == "red_light" and violation.severity is Severity.HIGH
    assert violation.start_time_ms == events[4].event_time_ms
    evidence = violation.evidence
    assert evidence.event_ids == [events[2].event_id, events[4].event_id]
    assert evidence.plate == "粤B12345" and evidence.snapshot_url == "http://nvr/s.jpg"
    details = evidence.details
    assert details["zone"] == "stop_north" and details["approach"] == "north"
    assert details["signal"]["phase"] == "north_through" and details["signal"]["state"] == "red"
    assert details["signal"]["for_ms"] == 1000
    assert details["code"] == "1625" and details["points"] == 6
    assert details["clip_url"] == "http://nvr/c.mp4" and details["track_id"] == "t1"


def test_borderline_grace_after_red():
    exactly = run([*cycle(), track(10.3, "t1", zones=["stop_north"])], RED)
    just_after = run([*cycle(), track(10.301, "t1", zones=["stop_north"])], RED)
    assert exactly == [] and len(just_after) == 1


def test_entering_on_green_or_amber_is_not_a_violation():
    events = [*cycle(), track(5, "green", zones=["stop_north"]), track(8, "amber", zones=["stop_north"])]
    assert run(events, RED) == []


def test_a_vehicle_already_in_the_zone_when_it_turns_red_did_not_enter_on_red():
    events = [*cycle(), track(9.5, "t1", zones=["stop_north"]), track(12, "t1", zones=["stop_north"])]
    assert run(events, RED) == []


def test_one_violation_per_track_and_approach_even_across_lanes():
    events = [*cycle(), track(11, "t1", zones=["stop_north"]), track(12, "t1", zones=["stop_north_lane2"]),
              track(13, "t2", zones=["stop_north"])]
    violations = run(events, RED)
    assert [v.evidence.details["track_id"] for v in violations] == ["t1", "t2"]


def test_other_approach_and_other_labels_are_judged_by_their_own_phase():
    events = [*cycle(), signal(0, "east_through", "green"),
              track(11, "t1", zones=["stop_east"]), track(11, "p1", label="person", zones=["stop_north"])]
    assert run(events, RED) == []


def test_unknown_or_stale_phase_is_never_judged():
    assert run([track(11, "t1", zones=["stop_north"])], RED) == []
    stale = [signal(0, "north_through", "red"), track(1000, "t1", zones=["stop_north"])]
    assert run(stale, RED) == []


def test_a_repeated_red_keeps_the_time_it_turned_red():
    events = [*cycle(), signal(10.2, "north_through", "red"), track(10.35, "t1", zones=["stop_north"])]
    assert len(run(events, RED)) == 1


def test_a_signal_change_arriving_late_is_put_back_in_event_time_order():
    # The red arrives after the track message that it precedes in event time: same result as in order.
    events = [signal(0, "north_through", "green"), track(11, "t1", zones=["stop_north"]),
              signal(10, "north_through", "red"), signal(40, "north_through", "green")]
    assert len(run(events, RED)) == 1


def test_shuffled_and_duplicated_delivery_gives_the_in_order_result():
    events = [*cycle(10), track(9, "a", zones=["stop_north"]), track(10.2, "b", zones=[]),
              track(10.5, "b", zones=["stop_north"]), track(10.6, "c", zones=["stop_north"]),
              track(10.9, "c", zones=[]), track(11.5, "c", zones=["stop_north"]),
              signal(30, "north_through", "green"), track(31, "d", zones=["stop_north"]),
              track(32, "a", stage="end")]
    expected = same_regardless_of_delivery(events, RED)
    assert [v.evidence.details["track_id"] for v in expected] == ["b", "c"]


def test_grace_is_overridable_per_zone():
    traffic_zones = [{"name": "stop_north", "type": "stop_line", "approach": "north",
                      "thresholds": {"red_light": {"grace_s": 2}}}]
    camera = {**TRAFFIC["cameras"][0], "zones": traffic_zones}
    traffic = traffic_settings(cameras=[camera])
    assert run([*cycle(), track(11.5, "t1", zones=["stop_north"])], RED, traffic=traffic) == []
    assert len(run([*cycle(), track(12.5, "t1", zones=["stop_north"])], RED, traffic=traffic)) == 1


PED = ["pedestrian_red"]


def test_person_stepping_on_the_crosswalk_on_red_is_a_violation_once():
    events = [signal(0, "ped_north", "red"), track(5, "p1", label="person", zones=["crosswalk_north"]),
              track(6, "p1", label="person", zones=[]),
              track(7, "p1", label="person", zones=["crosswalk_north"])]
    [violation] = run(events, PED)
    assert violation.type == "pedestrian_red" and violation.evidence.details["zone"] == "crosswalk_north"
    assert violation.evidence.details["signal"]["phase"] == "ped_north"


def test_person_on_green_or_within_grace_or_vehicle_is_not_a_pedestrian_violation():
    events = [signal(0, "ped_north", "green"), track(1, "p1", label="person", zones=["crosswalk_north"]),
              signal(10, "ped_north", "red"), track(10.3, "p2", label="person", zones=["crosswalk_north"]),
              track(12, "car", label="car", zones=["crosswalk_north"])]
    assert run(events, PED) == []


def test_pedestrian_shuffled_and_duplicated_delivery():
    events = [signal(0, "ped_north", "green"), signal(10, "ped_north", "red"),
              track(9.5, "p1", label="person", zones=["crosswalk_north"]),
              track(10.5, "p2", label="person", zones=["crosswalk_north"]),
              track(11, "p3", label="person", zones=["crosswalk_east"]), signal(20, "ped_north", "green"),
              track(21, "p4", label="person", zones=["crosswalk_north"])]
    [violation] = same_regardless_of_delivery(events, PED)
    assert violation.evidence.details["track_id"] == "p2"


def test_pedestrian_grace_borderline():
    base = [signal(0, "ped_north", "green"), signal(10, "ped_north", "red")]
    exactly = run([*base, track(10.3, "p1", label="person", zones=["crosswalk_north"])], PED)
    just_after = run([*base, track(10.301, "p1", label="person", zones=["crosswalk_north"])], PED)
    assert exactly == [] and len(just_after) == 1
