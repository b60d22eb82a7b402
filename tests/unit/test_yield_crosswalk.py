"""Failure to yield at a crosswalk: vehicles entering while a person is inside."""

from __future__ import annotations

from tests.support.traffic import run, same_regardless_of_delivery, track

YIELD = ["yield_crosswalk"]
CW = "crosswalk_north"


def person(at_s, track_id="p1", zones=(CW,), **kwargs):
    return track(at_s, track_id, label="person", zones=zones, **kwargs)


def test_vehicle_entering_while_a_person_is_inside_is_one_violation_with_both_tracks():
    events = [person(0), track(2, "car1", zones=[CW], plate="粤B1"), track(3, "car1", zones=[]),
              track(4, "car1", zones=[CW])]
    [violation] = run(events, YIELD)
    assert violation.type == "yield_crosswalk"
    assert violation.evidence.event_ids == [events[0].event_id, events[1].event_id]
    assert violation.evidence.details["persons_inside"] == ["p1"]
    assert violation.evidence.details["code"] == "1357" and violation.evidence.details["points"] == 3
    assert violation.evidence.plate == "粤B1"


def test_vehicle_entering_after_the_person_left_or_ended_is_fine():
    left = [person(0), person(1, zones=()), track(2, "car1", zones=[CW])]
    ended = [person(0), person(1, stage="end"), track(2, "car2", zones=[CW])]
    assert run(left, YIELD) == [] and run(ended, YIELD) == []


def test_person_in_another_crosswalk_does_not_count():
    assert run([person(0, zones=["crosswalk_east"]), track(1, "car1", zones=[CW])], YIELD) == []


def test_vehicle_already_in_the_crosswalk_before_the_person_came_did_not_enter_on_them():
    assert run([track(0, "car1", zones=[CW]), person(1), track(2, "car1", zones=[CW])], YIELD) == []


def test_min_persons_threshold_is_a_borderline():
    events = [person(0, "p1"), person(0.5, "p2"), track(1, "car1", zones=[CW])]
    assert len(run(events[:1] + events[2:], YIELD)) == 1
    settings = {"yield_crosswalk": {"min_persons": 2}}
    assert run(events[:1] + events[2:], YIELD, rule_settings=settings) == []
    assert len(run(events, YIELD, rule_settings=settings)) == 1


def test_a_person_whose_track_went_silent_expires_after_the_idle_time():
    events = [person(0), track(599.9, "car1", zones=[CW]), track(600, "car2", zones=[CW]),
              track(1300, "car3", zones=[CW])]
    violations = run(events, YIELD)
    assert [v.evidence.details["track_id"] for v in violations] == ["car1"]


def test_shuffled_and_duplicated_delivery():
    events = [person(0, "p1"), track(0.5, "c0", zones=[CW]), person(1, "p1", zones=()), person(1.2, "p2"),
              track(1.3, "c1", zones=[CW]), track(1.4, "c2", zones=["stop_north"]),
              person(2, "p2", stage="end"),
              track(2.1, "c2", zones=[CW]), track(2.5, "c1", zones=[CW])]
    expected = same_regardless_of_delivery(events, YIELD)
    assert [v.evidence.details["track_id"] for v in expected] == ["c0", "c1"]
