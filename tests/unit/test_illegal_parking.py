"""Illegal parking: dwell timers in event time, clearing, schedules in the city's time zone."""

from __future__ import annotations

from core.models import ViolationStatus
from tests.support.events import T0_MS
from tests.support.traffic import TRAFFIC, local_s, run, same_regardless_of_delivery, track, traffic_settings

PARK = ["illegal_parking"]
SIDEWALK = ["sidewalk_west"]


def parked(at_s, track_id="car1", zones=SIDEWALK, stationary=True, **kwargs):
    return track(at_s, track_id, zones=zones, stationary=stationary, **kwargs)


def test_opens_at_the_dwell_limit_without_a_message_and_clears_when_it_moves():
    events = [parked(0, plate="粤B9"), parked(100), parked(400, stationary=False)]
    opened, cleared = run(events, PARK)
    assert opened.type == "illegal_parking" and opened.status is ViolationStatus.OPEN
    assert opened.start_time_ms == T0_MS and opened.updated_time_ms == T0_MS + 300_000
    assert opened.evidence.plate == "粤B9" and opened.evidence.details["zone"] == "sidewalk_west"
    assert opened.evidence.details["code"] == "1039"
    assert cleared.violation_id == opened.violation_id and cleared.status is ViolationStatus.CLEARED
    assert cleared.end_time_ms == T0_MS + 400_000
    assert cleared.evidence.details["cleared_because"] == "moved"


def test_borderline_dwell():
    assert run([parked(0), parked(299.999, stationary=False)], PARK) == []
    opened, cleared = run([parked(0), parked(300, stationary=False)], PARK)
    assert cleared.end_time_ms == opened.updated_time_ms == T0_MS + 300_000


def test_moving_vehicles_people_and_other_zones_never_count():
    events = [parked(0, stationary=False), parked(350, stationary=False), parked(0, "p", label="person"),
              parked(0, "c2", zones=["main_road"]), parked(400, "c2", zones=["main_road"])]
    assert run(events, PARK) == []


def test_leaving_the_zone_or_ending_the_track_clears_with_its_end_time():
    left = run([parked(0), parked(310, zones=[])], PARK)
    ended = run([parked(0), parked(320, stage="end")], PARK)
    assert left[1].end_time_ms == T0_MS + 310_000
    assert left[1].evidence.details["cleared_because"] == "left_zone"
    assert ended[1].end_time_ms == T0_MS + 320_000
    assert ended[1].evidence.details["cleared_because"] == "track_ended"


def test_moving_and_stopping_again_restarts_the_dwell():
    events = [parked(0), parked(200, stationary=False), parked(250), parked(549)]
    assert run(events, PARK) == []
    [opened] = run([*events, parked(551)], PARK)
    assert opened.start_time_ms == T0_MS + 250_000


def test_a_track_whose_end_never_arrives_is_cleared_after_the_idle_time():
    events = [parked(0), parked(100), track(2000, "other", zones=[])]
    opened, cleared = run(events, PARK)
    assert cleared.violation_id == opened.violation_id
    assert cleared.evidence.details["cleared_because"] == "track_lost"
    assert cleared.end_time_ms == T0_MS + 300_000 and cleared.updated_time_ms == T0_MS + 700_000


def test_scheduled_zone_counts_only_in_force_time():
    # 2025-11-26 is a Wednesday: no parking 07:00-09:00 and 17:00-19:00.
    zone = ["no_parking_peaks"]
    every_5_min = [parked(local_s("2025-11-26T06:50") + 300 * i, zones=zone) for i in range(0, 33)]
    violations = run(every_5_min, PARK)
    assert [v.status for v in violations] == [ViolationStatus.OPEN, ViolationStatus.CLEARED]
    opened, cleared = violations
    assert opened.start_time_ms == T0_MS + local_s("2025-11-26T07:00") * 1000
    assert opened.updated_time_ms == T0_MS + local_s("2025-11-26T07:05") * 1000
    assert cleared.end_time_ms == T0_MS + local_s("2025-11-26T09:00") * 1000
    assert cleared.evidence.details["cleared_because"] == "zone_not_in_force"


def test_scheduled_zone_is_free_outside_its_windows_and_at_weekends():
    zone = ["no_parking_peaks"]
    late_morning = [parked(local_s("2025-11-26T08:57") + 300 * i, zones=zone) for i in range(0, 12)]
    saturday = [parked(local_s("2025-11-29T07:00") + 300 * i, "sat", zones=zone) for i in range(0, 12)]
    assert run(late_morning, PARK) == [] and run(saturday, PARK) == []


def test_a_holiday_is_skipped_and_a_made_up_workday_counts():
    schedules = {**TRAFFIC["schedules"], "workday_peaks": {
        "days": ["mon", "tue", "wed", "thu", "fri"], "windows": ["07:00-09:00"],
        "skip_dates": ["2025-11-26"], "extra_dates": ["2025-11-29"]}}
    traffic = traffic_settings(schedules=schedules)
    zone = ["no_parking_peaks"]
    wednesday = [parked(local_s("2025-11-26T07:00") + 200 * i, zones=zone) for i in range(0, 4)]
    saturday = [parked(local_s("2025-11-29T07:00") + 200 * i, "sat", zones=zone) for i in range(0, 4)]
    assert run(wednesday, PARK, traffic=traffic) == []
    assert len(run(saturday, PARK, traffic=traffic)) == 1


def test_dwell_is_overridable_per_zone_and_per_device():
    camera = {**TRAFFIC["cameras"][0], "zones": [
        {"name": "sidewalk_west", "type": "sidewalk", "thresholds": {"illegal_parking": {"dwell_s": 60}}}]}
    assert len(run([parked(0), parked(61)], PARK, traffic=traffic_settings(cameras=[camera]))) == 1

    class Registry:
        def get(self, device_id):
            from core.settings import DeviceSettings
            return DeviceSettings(device_id=device_id, kind="track",
                                  thresholds={"illegal_parking": {"dwell_s": 30}})

    assert len(run([parked(0), parked(31)], PARK, devices=Registry())) == 1


def test_shuffled_and_duplicated_delivery():
    # car1 moves off 0.2 s before its track ends: delivered the other way round, it would clear later.
    events = [parked(0), parked(1, "c2"), parked(150), parked(299, "c2", stationary=False), parked(301),
              parked(302, "c3"), parked(449.8, stationary=False), parked(450, stage="end"), parked(601, "c3"),
              parked(610, "c3", zones=[])]
    expected = same_regardless_of_delivery(events, PARK)
    assert [(v.evidence.details["track_id"], v.status.value) for v in expected] == [
        ("car1", "open"), ("car1", "cleared"), ("c3", "open"), ("c3", "cleared")]


def test_a_pending_dwell_timer_and_state_survive_a_snapshot_and_restore():
    from processors.engine import Engine
    from tests.support.traffic import rules

    first = Engine(rules(PARK), allowed_lateness_ms=0)
    first.process([parked(0), parked(100)], now_wall_ms=0)
    first.drain()
    second = Engine(rules(PARK), allowed_lateness_ms=0)
    second.restore(first.snapshot())
    out = second.process([parked(400), parked(500, stationary=False)], now_wall_ms=0)
    opened, cleared = out.violations
    assert opened.updated_time_ms == T0_MS + 300_000 and cleared.end_time_ms == T0_MS + 500_000


def test_standing_in_two_zones_is_judged_by_the_one_in_force():
    # Before 07:00 the scheduled zone is not in force, the sidewalk always is: one violation, sidewalk.
    zones = ["no_parking_peaks", "sidewalk_west"]
    events = [parked(local_s("2025-11-26T06:00") + 60 * i, zones=zones) for i in range(7)]
    [opened] = run(events, PARK)
    assert opened.evidence.details["zone"] == "sidewalk_west"
