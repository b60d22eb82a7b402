"""What the traffic rules count besides their violations (docs/denominators.md), worked out by hand for
each timeline: the population each rule judged and the part of it that broke the rule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.models import Event
from processors.engine import Engine
from tests.support.delivery import fed_as_delivered, shuffled_with_duplicates
from tests.support.traffic import CAMERA, local_s, rules, signal, track

DAY = "2025-11-26"


def counted(events: Sequence[Event], only: list[str], **kwargs: Any) -> dict[str, float]:
    """The day's totals of the camera per counter, after every event is judged."""
    engine = Engine(rules(only, **kwargs), allowed_lateness_ms=2000, time_zone="Asia/Shanghai")
    engine.process(events, now_wall_ms=0)
    engine.drain()
    totals = engine.exposures.totals()
    assert {(t.day, t.device_id) for t in totals} <= {(DAY, CAMERA)}
    return {t.counter: t.value for t in totals}


def cycle() -> list[Event]:
    """North goes green at 0, amber at 7, red at 10 (grace 0.3 s)."""
    return [signal(0, "north_through", "green"), signal(7, "north_through", "amber"),
            signal(10, "north_through", "red")]


def test_red_light_counts_each_vehicle_crossing_a_judged_stop_line_once_per_approach() -> None:
    events = [
        track(-5, "t0", zones=["stop_north"]),  # no signal known yet: the rule cannot judge it
        *cycle(),
        track(5, "t1", zones=["stop_north"]),  # green: crossed, not on red
        track(6, "t1", zones=[]), track(8, "t1", zones=["stop_north"]),  # the same approach again
        track(10.2, "t4", zones=["stop_north"]),  # red for 0.2 s, within the grace: not on red
        track(11, "t2", zones=["stop_north"]),  # red: crossed on red
        track(12, "t2", zones=["stop_north_lane2"]),  # another lane of the same approach
        track(11, "t3", zones=["stop_east"]),  # the east phase was never reported
        track(11, "p1", label="person", zones=["stop_north"]),  # not a vehicle
    ]
    assert counted(events, ["red_light"]) == {"stop_line_crossings": 3.0, "red_light_crossings": 1.0}


def test_red_light_a_vehicle_back_on_the_line_on_red_is_one_crossing_and_on_red() -> None:
    # Its first crossing was counted on green; entering again on red is the rule's violation.
    events = [*cycle(), track(5, "t1", zones=["stop_north"]), track(6, "t1", zones=[]),
              track(13, "t1", zones=["stop_north"])]
    assert counted(events, ["red_light"]) == {"stop_line_crossings": 1.0, "red_light_crossings": 1.0}


def test_red_light_counts_the_same_whatever_the_delivery_order_and_duplicates() -> None:
    events = [*cycle(), track(5, "t1", zones=["stop_north"]), track(11, "t2", zones=["stop_north"]),
              track(11.5, "t3", zones=["stop_north"]), track(12, "t3", zones=["stop_north_lane2"])]
    expected = {"stop_line_crossings": 3.0, "red_light_crossings": 2.0}
    assert counted(events, ["red_light"]) == expected
    for seed in range(5):
        out = fed_as_delivered(rules(["red_light"]), shuffled_with_duplicates(events, seed))
        latest = {t.counter: t.value for t in out.exposures}  # what the store keeps: the latest total
        assert latest == expected, seed


def person(at_s: float, track_id: str = "p1", zones: Sequence[str] = ("crosswalk_north",),
           **kwargs: Any) -> Event:
    return track(at_s, track_id, label="person", zones=zones, **kwargs)


def test_yield_counts_vehicles_that_met_a_pedestrian_and_those_that_entered_on_them() -> None:
    cw = ["crosswalk_north"]
    events = [
        person(0),
        track(2, "car1", zones=cw),  # p1 inside: met, did not yield
        person(5, zones=()),  # p1 leaves
        track(8, "car2", zones=cw),  # 3 s after p1 left (within encounter_s 10): met, yielded
        track(9, "car1", zones=[]), track(9.5, "car1", zones=cw),  # car1 again: counted already
        track(16, "car3", zones=cw),  # 11 s after p1 left: met nobody
        track(8, "car4", zones=["crosswalk_east"]),  # nobody was ever in that crosswalk
    ]
    assert counted(events, ["yield_crosswalk"]) == {"crosswalk_encounters": 2.0,
                                                   "crosswalk_not_yielded": 1.0}


def test_yield_a_vehicle_meeting_fewer_persons_than_min_persons_met_them_and_broke_nothing() -> None:
    events = [person(0), track(1, "car1", zones=["crosswalk_north"])]
    assert counted(events, ["yield_crosswalk"], rule_settings={"yield_crosswalk": {"min_persons": 2}}) == {
        "crosswalk_encounters": 1.0}


def test_no_helmet_counts_each_classified_rider_once_and_those_reported_without_a_helmet() -> None:
    events = [
        track(0, "m1", label="motorcycle", helmet=False), track(1, "m1", label="motorcycle", helmet=False),
        track(0, "e1", label="e-bike", helmet=True), track(1, "e1", label="e-bike", helmet=True),
        track(0, "e2", label="e-bike", helmet=True), track(1, "e2", label="e-bike", helmet=False),
        track(0, "e3", label="e-bike"),  # never classified: not observed
        track(0, "c1", label="car", helmet=False),  # not a rider
    ]
    assert counted(events, ["no_helmet"], rule_settings={"no_helmet": {"consecutive": 2}}) == {
        "riders_observed": 3.0, "riders_without_helmet": 1.0}


def speed(at_s: float, kmh: float | None, track_id: str, zones: Sequence[str] = ("main_road",)) -> Event:
    return track(at_s, track_id, zones=zones, **({} if kmh is None else {"speed_kmh": kmh}))


def test_speeding_counts_each_vehicle_once_per_limit_zone_and_each_first_excess() -> None:
    events = [
        speed(0, 50, "c1"), speed(1, 70, "c1"), speed(2, 80, "c1"),  # one excess, raised a band
        speed(0, 50, "c2"),  # measured, within the limit
        speed(0, 50, "c3"), speed(1, 45, "c3", zones=["slow_lane"]),  # two zones; over 40 in the second
        speed(0, 90, "c4", zones=[]),  # outside every speed zone: not measured
        speed(0, None, "c5"),  # no speed: not measured
    ]
    assert counted(events, ["speeding"]) == {"vehicles_measured": 4.0, "vehicles_speeding": 2.0}


def parked(at_s: float, track_id: str, zones: Sequence[str] = ("sidewalk_west",), stationary: bool = True,
           **kwargs: Any) -> Event:
    return track(at_s, track_id, zones=zones, stationary=stationary, **kwargs)


def by_day(events: Sequence[Event], only: list[str]) -> dict[tuple[str, str], float]:
    engine = Engine(rules(only), allowed_lateness_ms=2000, time_zone="Asia/Shanghai")
    engine.process(events, now_wall_ms=0)
    engine.drain()
    return {(t.day, t.counter): t.value for t in engine.exposures.totals() if t.device_id == CAMERA}


def test_parking_counts_standing_minutes_and_the_minutes_of_each_violation() -> None:
    events = [
        parked(0, "car1"), parked(100, "car1"), parked(400, "car1", stationary=False),  # 400 s, all illegal
        parked(0, "car2"), parked(200, "car2", stationary=False),  # 200 s, under the 300 s dwell
        parked(1000, "car3"), parked(1100, "car3"),  # lost: illegal from 1000 to its opening at 1300
        parked(0, "walker", label="person"), parked(500, "walker", label="person"),  # not a vehicle
        parked(0, "car4", zones=["main_road"]), parked(500, "car4", zones=["main_road"]),  # not watched
        track(3000, "other", zones=[]),  # moves event time past car3's idle time
    ]
    assert by_day(events, ["illegal_parking"]) == {
        ("2025-11-26", "parking_occupied_minutes"): (400 + 200 + 300) / 60,
        ("2025-11-26", "parking_illegal_minutes"): (400 + 300) / 60,
    }


def test_parking_in_a_scheduled_zone_is_illegal_only_while_the_zone_is_in_force() -> None:
    # No parking 07:00-09:00 on workdays: standing 06:50-09:30 is 160 minutes, 120 of them illegal.
    start = local_s("2025-11-26T06:50")
    events = [parked(start + minute * 60, "car1", zones=["no_parking_peaks"]) for minute in range(0, 160, 5)]
    events.append(parked(start + 160 * 60, "car1", zones=["no_parking_peaks"], stationary=False))
    assert by_day(events, ["illegal_parking"]) == {
        ("2025-11-26", "parking_occupied_minutes"): 160.0,
        ("2025-11-26", "parking_illegal_minutes"): 120.0,
    }


def test_parking_minutes_are_split_at_local_midnight() -> None:
    start = local_s("2025-11-26T23:50")
    events = [parked(start + minute * 60, "car1") for minute in range(0, 20, 5)]
    events.append(parked(start + 20 * 60, "car1", stationary=False))
    assert by_day(events, ["illegal_parking"]) == {
        ("2025-11-26", "parking_occupied_minutes"): 10.0, ("2025-11-27", "parking_occupied_minutes"): 10.0,
        ("2025-11-26", "parking_illegal_minutes"): 10.0, ("2025-11-27", "parking_illegal_minutes"): 10.0,
    }
