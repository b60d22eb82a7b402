"""Working time equals a minute-by-minute count on the local wall clock, and a deadline uses up exactly its
allowance, for any start, amount and suspensions, across a weekend, a holiday, a make-up day and a
daylight-saving change."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.working_calendar import WorkingCalendarSettings
from processors.cases.calendar import WorkingCalendar

PROPS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60)
MINUTE_MS = 60_000

NEW_YORK = WorkingCalendarSettings(
    time_zone="America/New_York", days=["mon", "tue", "wed", "thu", "fri", "sun"],
    hours=["07:00-12:00", "13:30-18:00"], weekday_hours={"sun": ["09:00-11:00", "22:00-24:00"]},
    holidays=[date(2026, 3, 10)], makeup_workdays=[date(2026, 3, 7)],
)
SHANGHAI = WorkingCalendarSettings(holidays=[date(2026, 10, day) for day in range(1, 8)],
                                   makeup_workdays=[date(2026, 10, 10)])
# Six days around each calendar's interesting dates (spring forward on 2026-03-08 in New York).
WEEKS = {id(NEW_YORK): int(datetime(2026, 3, 5, tzinfo=UTC).timestamp() * 1000),
         id(SHANGHAI): int(datetime(2026, 10, 5, tzinfo=UTC).timestamp() * 1000)}
SPAN_MINUTES = 6 * 24 * 60


def minutes(text: str) -> int:
    return int(text[:2]) * 60 + int(text[3:])


def working_minute(calendar: WorkingCalendarSettings, time_ms: int) -> bool:
    """Is the minute starting at `time_ms` working time? Read straight off the settings."""
    wall = datetime.fromtimestamp(time_ms / 1000, tz=zoneinfo.ZoneInfo(calendar.time_zone))
    day, weekday = wall.date(), ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[wall.weekday()]
    if day in calendar.makeup_workdays:
        windows = calendar.hours
    elif day in calendar.holidays or weekday not in calendar.days:
        return False
    else:
        windows = calendar.weekday_hours.get(weekday, calendar.hours)
    minute = wall.hour * 60 + wall.minute
    return any(minutes(w[:5]) <= minute < minutes(w[6:]) for w in windows)


def counted(calendar, minute_ms: int, suspended) -> bool:
    return working_minute(calendar, minute_ms) and not any(s <= minute_ms < e for s, e in suspended)


cases = st.tuples(
    st.sampled_from([NEW_YORK, SHANGHAI]),
    st.integers(0, SPAN_MINUTES // 2),
    st.integers(0, SPAN_MINUTES // 2),
    st.lists(st.tuples(st.integers(0, SPAN_MINUTES), st.integers(1, 2000)), max_size=4),
)


@PROPS
@given(cases)
def test_working_time_is_the_count_of_working_minutes(case):
    calendar, start_minute, length, cuts = case
    origin = WEEKS[id(calendar)]
    start_ms = origin + start_minute * MINUTE_MS
    end_ms = start_ms + length * MINUTE_MS
    suspended = [(origin + s * MINUTE_MS, origin + (s + n) * MINUTE_MS) for s, n in cuts]
    expected = sum(counted(calendar, start_ms + m * MINUTE_MS, suspended) for m in range(length))
    assert WorkingCalendar(calendar).working_ms(start_ms, end_ms, suspended) == expected * MINUTE_MS


@PROPS
@given(cases)
def test_a_deadline_is_the_end_of_the_last_minute_of_its_allowance(case):
    calendar, start_minute, amount, cuts = case
    amount = amount // 4 + 1
    origin = WEEKS[id(calendar)]
    start_ms = origin + start_minute * MINUTE_MS
    suspended = [(origin + s * MINUTE_MS, origin + (s + n) * MINUTE_MS) for s, n in cuts]
    working = WorkingCalendar(calendar)
    deadline = working.add_working_ms(start_ms, amount * MINUTE_MS, suspended)
    minute_ms, left = start_ms, amount
    while True:
        left -= counted(calendar, minute_ms, suspended)
        minute_ms += MINUTE_MS
        if left == 0:
            break
    assert deadline == minute_ms
    assert working.working_ms(start_ms, deadline, suspended) == amount * MINUTE_MS


@PROPS
@given(st.integers(0, SPAN_MINUTES), st.integers(0, SPAN_MINUTES), st.integers(0, SPAN_MINUTES))
def test_working_time_adds_up_over_consecutive_spans(a, b, c):
    first, middle, last = sorted((a, b, c))
    working = WorkingCalendar(NEW_YORK)
    origin = WEEKS[id(NEW_YORK)]
    at = [origin + m * MINUTE_MS + 17 for m in (first, middle, last)]  # not on minute boundaries
    assert working.working_ms(at[0], at[1]) + working.working_ms(at[1], at[2]) == working.working_ms(at[0],
                                                                                                     at[2])


@PROPS
@given(st.integers(0, SPAN_MINUTES * MINUTE_MS), st.integers(1, 3000), st.floats(0.05, 0.95),
       st.sampled_from(["working", "calendar"]))
def test_sla_status_goes_within_warning_overdue_at_its_warning_time_and_deadline(start, minutes_, warn_at,
                                                                                 clock):
    from core.working_calendar import SlaSettings
    from processors.cases.calendar import SlaPolicy, SlaStatus

    policy = SlaPolicy(SlaSettings(calendars={"default": SHANGHAI}, warn_at=warn_at,
                                   priorities={"p": {"allowance_minutes": minutes_, "clock": clock}}))
    terms = policy.terms("p")
    registered = WEEKS[id(SHANGHAI)] + start
    warning, deadline = terms.warning_ms(registered), terms.deadline_ms(registered)
    assert registered <= warning <= deadline
    assert terms.elapsed_ms(registered, deadline) == minutes_ * MINUTE_MS
    assert terms.elapsed_ms(registered, warning) == round(minutes_ * MINUTE_MS * warn_at)
    if warning > registered:
        assert terms.status(registered, warning - 1) is SlaStatus.WITHIN
    assert terms.status(registered, warning) is SlaStatus.WARNING
    assert terms.status(registered, deadline) is SlaStatus.WARNING
    assert terms.status(registered, deadline + 1) is SlaStatus.OVERDUE
