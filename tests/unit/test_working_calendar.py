"""Working calendars and SLA clocks: deadlines worked out by hand across lunch breaks, weekends, holidays,
make-up working days, midnight, the new year, daylight-saving changes and suspensions."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from core.case_settings import CaseSettings
from core.working_calendar import SlaClock, SlaSettings, WorkingCalendarSettings
from processors.cases.calendar import SlaPolicy, SlaStatus, UnknownPriorityError, WorkingCalendar
from processors.local_hours import local_instant_ms

MINUTE_MS = 60_000
HOUR_MS = 3_600_000


def local(text: str, zone: str = "Asia/Shanghai") -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=zoneinfo.ZoneInfo(zone)).timestamp() * 1000)


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


# National Day 2026 as a test calendar: Thu 1 Oct to Wed 7 Oct off, Saturday 10 Oct worked in exchange.
CITY_HALL = WorkingCalendar(WorkingCalendarSettings(
    holidays=[date(2026, 10, day) for day in range(1, 8)] + [date(2027, 1, 1)],
    makeup_workdays=[date(2026, 10, 10)],
))


def test_the_lunch_break_does_not_count():
    start = local("2026-12-07T11:00")  # a Monday
    deadline = CITY_HALL.add_working_ms(start, 120 * MINUTE_MS)
    assert deadline == local("2026-12-07T15:00")  # 11:00-12:00, then 14:00-15:00
    assert CITY_HALL.working_ms(start, local("2026-12-07T15:00")) == 2 * HOUR_MS
    assert not CITY_HALL.is_working_at(local("2026-12-07T13:00"))
    assert CITY_HALL.is_working_at(local("2026-12-07T14:00"))


def test_a_weekend_does_not_count():
    friday_five = local("2026-12-11T17:00")
    assert CITY_HALL.add_working_ms(friday_five, 4 * HOUR_MS) == local("2026-12-14T11:30")  # 1 h + 3 h on Mon
    assert CITY_HALL.working_ms(friday_five, local("2026-12-14T08:30")) == HOUR_MS


def test_a_start_outside_working_hours_counts_from_the_next_working_minute():
    saturday = local("2026-12-12T10:00")
    assert CITY_HALL.add_working_ms(saturday, 30 * MINUTE_MS) == local("2026-12-14T09:00")


def test_the_allowance_used_up_at_the_end_of_a_window_is_due_then():
    assert CITY_HALL.add_working_ms(local("2026-12-07T08:30"), 210 * MINUTE_MS) == local("2026-12-07T12:00")


def test_public_holidays_do_not_count():
    eve = local("2026-09-30T17:00")  # Wednesday before the holiday week
    assert CITY_HALL.add_working_ms(eve, 2 * HOUR_MS) == local("2026-10-08T09:30")
    assert CITY_HALL.working_ms(eve, local("2026-10-08T08:30")) == HOUR_MS


def test_a_make_up_working_day_counts_although_it_is_a_saturday():
    friday = local("2026-10-09T17:30")
    assert CITY_HALL.add_working_ms(friday, HOUR_MS) == local("2026-10-10T09:00")
    assert CITY_HALL.is_working_at(local("2026-10-10T10:00"))
    assert not CITY_HALL.is_working_at(local("2026-10-17T10:00"))  # the next Saturday is off


def test_across_the_new_year_with_new_years_day_off():
    new_years_eve = local("2026-12-31T17:00")
    assert CITY_HALL.add_working_ms(new_years_eve, 2 * HOUR_MS) == local("2027-01-04T09:30")


def test_a_weekday_with_its_own_hours():
    short_fridays = WorkingCalendar(WorkingCalendarSettings(weekday_hours={"fri": ["08:30-12:00",
                                                                                  "14:00-16:30"]}))
    friday = local("2026-12-11T16:00")
    assert short_fridays.add_working_ms(friday, HOUR_MS) == local("2026-12-14T09:00")  # 30 min + 30 min


def test_windows_across_midnight_count_on():
    nights = WorkingCalendar(WorkingCalendarSettings(days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                                     hours=["00:00-06:00", "22:00-24:00"]))
    assert nights.add_working_ms(local("2026-12-07T23:00"), 3 * HOUR_MS) == local("2026-12-08T02:00")


def test_calendar_time_counts_every_minute_across_midnight():
    every_minute = WorkingCalendar.every_minute()
    start = local("2026-12-31T23:30")
    assert every_minute.add_working_ms(start, 2 * HOUR_MS) == local("2027-01-01T01:30")
    assert every_minute.is_working_at(local("2027-01-01T03:00"))


NEW_YORK = "America/New_York"
NEW_YORK_OFFICE = WorkingCalendar(WorkingCalendarSettings(time_zone=NEW_YORK, hours=["08:00-17:00"]))


def test_working_hours_are_local_wall_clock_hours_across_spring_forward():
    # 2026-03-08: clocks go from 02:00 EST to 03:00 EDT; Friday 16:00 EST is 21:00 UTC, Monday 09:00 EDT
    # is 13:00 UTC.
    friday = utc("2026-03-06T21:00")
    assert NEW_YORK_OFFICE.add_working_ms(friday, 2 * HOUR_MS) == utc("2026-03-09T13:00")


def test_a_whole_day_lasts_23_hours_in_spring_and_25_in_autumn():
    every_day = WorkingCalendar(WorkingCalendarSettings(
        time_zone=NEW_YORK, days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"], hours=["00:00-24:00"]))
    assert every_day.working_ms(utc("2026-03-07T17:00"), utc("2026-03-08T16:00")) == 23 * HOUR_MS
    assert every_day.working_ms(utc("2026-10-31T16:00"), utc("2026-11-01T17:00")) == 25 * HOUR_MS
    # Saturday noon plus 24 working hours is Sunday 13:00 on the wall clock in spring.
    assert every_day.add_working_ms(utc("2026-03-07T17:00"), 24 * HOUR_MS) == utc("2026-03-08T17:00")


def test_a_window_starting_in_the_skipped_hour_starts_when_the_clocks_jump():
    new_york = zoneinfo.ZoneInfo(NEW_YORK)
    assert local_instant_ms(date(2026, 3, 8), 150, new_york) == utc("2026-03-08T07:00")  # "02:30"
    assert local_instant_ms(date(2026, 3, 8), 180, new_york) == utc("2026-03-08T07:00")  # 03:00 EDT
    assert local_instant_ms(date(2026, 11, 1), 90, new_york) == utc("2026-11-01T05:30")  # first 01:30
    early = WorkingCalendar(WorkingCalendarSettings(time_zone=NEW_YORK, days=["sun"], hours=["02:30-05:00"]))
    assert early.working_ms(utc("2026-03-08T00:00"), utc("2026-03-09T00:00")) == 2 * HOUR_MS


def test_calendar_time_across_daylight_saving_is_elapsed_time():
    every_minute = WorkingCalendar.every_minute()
    half_past_one_est = utc("2026-03-08T06:30")
    assert every_minute.add_working_ms(half_past_one_est, 2 * HOUR_MS) == utc("2026-03-08T08:30")  # 04:30 EDT


@pytest.mark.parametrize("calendar, edges", [
    (CITY_HALL, ["2026-12-07T08:30", "2026-12-07T12:00", "2026-12-07T14:00", "2026-12-07T17:30",
                 "2026-12-11T17:30", "2026-09-30T17:30", "2026-10-09T17:30"]),
    (NEW_YORK_OFFICE, ["2026-03-06T21:00", "2026-03-06T22:00", "2026-03-09T12:00", "2026-11-02T13:00"]),
])
def test_deadlines_from_every_instant_near_a_window_edge_are_exact(calendar, edges):
    """Cases registered in the same minute share the arithmetic of that minute; a minute where a window
    opens or closes, at the start or at the deadline, must still give each instant its own exact answer:
    `amount` of working time from the start, and not a millisecond earlier."""
    zone = "Asia/Shanghai" if calendar is CITY_HALL else "UTC"
    for edge in edges:
        around = local(edge, zone) if zone != "UTC" else utc(edge)
        for amount in (30_000, MINUTE_MS, 90 * MINUTE_MS + 1_234, 4 * HOUR_MS):
            # The deadline's own minute straddles a window edge too for these starts.
            for start in (around + offset for offset in range(-150_000, 150_000, 7_001)):
                deadline = calendar.add_working_ms(start, amount)
                assert calendar.working_ms(start, deadline) == amount, (edge, amount, start)
                assert calendar.working_ms(start, deadline - 1) < amount, (edge, amount, start)
            end_of_window = around - amount  # starts whose deadline falls on the edge
            for start in (end_of_window + offset for offset in range(-90_000, 90_000, 3_001)):
                deadline = calendar.add_working_ms(start, amount)
                assert calendar.working_ms(start, deadline) == amount, (edge, amount, start)
                assert calendar.working_ms(start, deadline - 1) < amount, (edge, amount, start)


def test_suspended_time_does_not_count():
    monday_nine = local("2026-12-07T09:00")
    suspended = [(local("2026-12-07T10:00"), local("2026-12-08T10:00"))]
    # 09:00-10:00 before the suspension, then Tuesday 10:00-12:00 and 14:00-15:00.
    deadline = CITY_HALL.add_working_ms(monday_nine, 4 * HOUR_MS, suspended)
    assert deadline == local("2026-12-08T15:00")
    assert CITY_HALL.working_ms(monday_nine, deadline, suspended) == 4 * HOUR_MS
    # Without it: Monday 09:00-12:00 and 14:00-18:00, Tuesday 08:30-12:00 and 14:00-15:00.
    assert CITY_HALL.working_ms(monday_nine, deadline) == 11 * HOUR_MS + 30 * MINUTE_MS


def test_overlapping_suspensions_count_once_and_earlier_ones_not_at_all():
    monday_nine = local("2026-12-07T09:00")
    suspended = [(local("2026-12-07T10:00"), local("2026-12-07T11:00")),
                 (local("2026-12-07T10:30"), local("2026-12-07T11:30")),
                 (local("2026-12-06T10:00"), local("2026-12-07T08:00"))]
    assert CITY_HALL.working_ms(monday_nine, local("2026-12-07T12:00"), suspended) == 90 * MINUTE_MS


def test_a_suspension_still_running_keeps_the_deadline_open():
    monday_nine = local("2026-12-07T09:00")
    suspended = [(local("2026-12-07T10:00"), None)]
    assert CITY_HALL.add_working_ms(monday_nine, 4 * HOUR_MS, suspended) is None
    assert CITY_HALL.add_working_ms(monday_nine, 30 * MINUTE_MS, suspended) == local("2026-12-07T09:30")
    assert CITY_HALL.working_ms(monday_nine, local("2026-12-09T12:00"), suspended) == HOUR_MS


def test_a_negative_amount_is_refused():
    with pytest.raises(ValueError, match="cannot be negative"):
        CITY_HALL.add_working_ms(0, -1)


POLICY = SlaPolicy(SlaSettings(
    calendars={"default": WorkingCalendarSettings(holidays=[date(2027, 1, 1)]),
               "round_the_clock": WorkingCalendarSettings(around_the_clock=True)},
    overrides=[
        {"department": "water", "calendar": "round_the_clock"},
        {"case_type": "manhole_missing", "allowance_minutes": 60, "clock": "calendar"},
        {"case_type": "manhole_missing", "department": "water", "allowance_minutes": 30},
        {"department": "parks", "priority": "normal", "warn_at": 0.5},
    ],
))


def test_priorities_have_their_own_allowance_and_clock():
    urgent = POLICY.terms("urgent")
    assert (urgent.allowance_ms, urgent.clock) == (120 * MINUTE_MS, SlaClock.CALENDAR)
    saturday_night = local("2026-12-12T23:00")
    assert urgent.deadline_ms(saturday_night) == local("2026-12-13T01:00")
    high = POLICY.terms("high")
    assert high.deadline_ms(saturday_night) == local("2026-12-14T14:30")  # 08:30-12:00, 14:00-14:30


def test_overrides_apply_most_specific_last_field_by_field():
    water = POLICY.terms("high", department="water")
    assert (water.calendar_name, water.allowance_ms) == ("round_the_clock", 240 * MINUTE_MS)
    assert water.deadline_ms(local("2026-12-12T23:00")) == local("2026-12-13T03:00")
    manhole = POLICY.terms("normal", case_type="manhole_missing")
    assert (manhole.allowance_ms, manhole.clock) == (60 * MINUTE_MS, SlaClock.CALENDAR)
    both = POLICY.terms("normal", case_type="manhole_missing", department="water")
    assert (both.allowance_ms, both.clock, both.calendar_name) == (30 * MINUTE_MS, SlaClock.CALENDAR,
                                                                   "round_the_clock")
    assert POLICY.terms("normal", department="parks").warn_at == 0.5
    assert POLICY.terms("high", department="parks").warn_at == 0.8


def test_the_warning_comes_at_its_share_of_the_allowance():
    high = POLICY.terms("high")  # 4 working hours, warn at 80% = 3 h 12 min
    monday_nine = local("2026-12-07T09:00")
    assert high.warning_ms(monday_nine) == local("2026-12-07T14:12")
    assert high.deadline_ms(monday_nine) == local("2026-12-07T15:00")


def test_status_is_within_then_warning_then_overdue_even_outside_working_hours():
    high = POLICY.terms("high")
    monday_nine = local("2026-12-07T09:00")
    assert high.status(monday_nine, local("2026-12-07T14:11")) is SlaStatus.WITHIN
    assert high.status(monday_nine, local("2026-12-07T14:12")) is SlaStatus.WARNING
    assert high.status(monday_nine, local("2026-12-07T15:00")) is SlaStatus.WARNING  # closing now is on time
    assert high.status(monday_nine, local("2026-12-07T15:00") + 1) is SlaStatus.OVERDUE
    assert high.status(monday_nine, local("2026-12-07T20:00")) is SlaStatus.OVERDUE
    assert high.elapsed_ms(monday_nine, local("2026-12-07T20:00")) == 7 * HOUR_MS


def test_a_running_suspension_holds_the_clock_until_now():
    high = POLICY.terms("high")
    monday_nine = local("2026-12-07T09:00")
    suspended = [(local("2026-12-07T10:00"), None)]
    assert high.status(monday_nine, local("2026-12-09T10:00"), suspended) is SlaStatus.WITHIN
    late = [(local("2026-12-07T16:00"), None)]  # suspended after the deadline had passed
    assert high.status(monday_nine, local("2026-12-09T10:00"), late) is SlaStatus.OVERDUE


def test_an_unknown_priority_is_named_with_the_configured_ones():
    with pytest.raises(UnknownPriorityError, match=r"unknown priority 'critical' \(configured: \['high', "):
        POLICY.terms("critical")


@pytest.mark.parametrize(("settings", "message"), [
    ({"around_the_clock": True, "hours": ["08:00-17:00"]}, "a calendar around the clock has no hours"),
    ({"makeup_workdays": ["2026-10-12"]}, "make-up working days that are working weekdays already"),
    ({"holidays": ["2026-10-10"], "makeup_workdays": ["2026-10-10"]}, "both holidays and make-up"),
    ({"hours": ["08:00-12:00", "11:00-13:00"]}, "time windows overlap"),
    ({"hours": ["18:00-08:00"]}, "ends before it starts"),
    ({"days": []}, "needs working days and hours"),
    ({"weekday_hours": {"sat": ["09:00-12:00"]}}, "weekday_hours for days that are not in `days`"),
    ({"time_zone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
])
def test_calendar_settings_are_refused_with_a_reason(settings, message):
    with pytest.raises(ValidationError, match=message):
        WorkingCalendarSettings.model_validate(settings)


@pytest.mark.parametrize(("settings", "message"), [
    ({"calendar": "night_shift"}, r"unknown calendars \['night_shift'\]"),
    ({"overrides": [{"department": "water", "calendar": "nights"}]}, r"unknown calendars \['nights'\]"),
    ({"overrides": [{"department": "water", "priority": "p1", "warn_at": 0.5}]}, "unknown priorities"),
    ({"overrides": [{"department": "water", "warn_at": 0.5}, {"department": "water", "warn_at": 0.6}]},
     "overrides repeat"),
    ({"overrides": [{"allowance_minutes": 5}]}, "names a case_type, a department or both"),
    ({"overrides": [{"department": "water"}]}, "sets allowance_minutes, clock, calendar or warn_at"),
    ({"priorities": {}}, "sla.priorities is empty"),
])
def test_sla_settings_are_refused_with_a_reason(settings, message):
    with pytest.raises(ValidationError, match=message):
        SlaSettings.model_validate(settings)


def test_the_example_in_the_docs_loads_and_means_what_the_docs_say():
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[2] / "docs" / "cases.md").read_text()
    block = re.search(r"```yaml\n(cases:\n  sla:.*?)```", text, re.S)
    assert block is not None
    # Its place in the configuration: cases.sla.
    policy = SlaPolicy(CaseSettings.model_validate(yaml.safe_load(block.group(1))["cases"]).sla)
    friday_four = local("2026-12-11T16:00")
    assert policy.terms("high").deadline_ms(friday_four) == local("2026-12-14T11:30")  # Fridays end at 17:00
    assert policy.terms("high", department="water").deadline_ms(friday_four) == local("2026-12-11T20:00")
    assert policy.terms("normal", department="parks").allowance_ms == 1350 * MINUTE_MS
    assert policy.terms("low").warn_at == 0.9
    city_hall = policy.terms("high").counter
    assert city_hall.working_ms(local("2026-10-01T00:00"), local("2026-10-08T00:00")) == 0
    # Thursday, a short Friday and the make-up Saturday.
    thursday_to_sunday = city_hall.working_ms(local("2026-10-08T00:00"), local("2026-10-11T00:00"))
    assert thursday_to_sunday == 21 * HOUR_MS + 30 * MINUTE_MS
