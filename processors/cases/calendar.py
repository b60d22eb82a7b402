"""Working time and SLA clocks for cases.

`WorkingCalendar` answers three questions in epoch milliseconds: how much working time lies between two
instants (less the intervals a case was suspended), when a given amount of working time from a start is
used up (the deadline), and whether an instant is working time. `SlaPolicy` picks a case's terms (the
allowance, the clock it counts in, the warning share) by priority, case type and department, and gives
its deadline, warning time and status. Local hours come from processors/local_hours.py, the same
wall-clock arithmetic traffic schedules use (docs/cases.md, "Working calendar and SLA").
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from core.local_time import WEEKDAYS, parse_window
from core.working_calendar import SlaClock, SlaSettings, WorkingCalendarSettings
from processors.local_hours import FOREVER_MS, LocalHours

MINUTE_MS = 60_000
# A suspension still running: (start_ms, None).
Suspension = tuple[int, int | None]


class WorkingCalendar:
    """When the clock runs, as half-open intervals [start_ms, end_ms) of working time."""

    def __init__(self, settings: WorkingCalendarSettings) -> None:
        self.settings = settings
        self.around_the_clock = settings.around_the_clock
        self.time_zone = zoneinfo.ZoneInfo(settings.time_zone)
        hours = sorted(parse_window(window) for window in settings.hours)
        self._windows = {
            WEEKDAYS.index(day): sorted(parse_window(w) for w in settings.weekday_hours.get(day, [])) or hours
            for day in settings.days
        }
        self._makeup_windows = hours
        self._holidays = frozenset(settings.holidays)
        self._makeup = frozenset(settings.makeup_workdays)
        self._hours = LocalHours(self.time_zone, self._windows_on)
        # add_working_ms without suspensions, per (amount, minute of the start): see _by_minute.
        self._minutes: dict[tuple[int, int], tuple[int, int] | None] = {}

    @classmethod
    def every_minute(cls) -> WorkingCalendar:
        """The calendar clock: every instant counts."""
        return cls(WorkingCalendarSettings(around_the_clock=True))

    def _windows_on(self, day: date) -> list[tuple[int, int]]:
        if day in self._makeup:
            return self._makeup_windows
        if day in self._holidays:
            return []
        return self._windows.get(day.weekday(), [])

    def is_working_at(self, time_ms: int) -> bool:
        return self.around_the_clock or self._hours.active_at(time_ms)

    def intervals(self, from_ms: int) -> Iterator[tuple[int, int]]:
        """Working intervals that end after `from_ms`, in order, without end (validation guarantees every
        week has working time); a window ending at midnight and the next day's starting then are two."""
        if self.around_the_clock:
            yield from_ms, FOREVER_MS
            return
        yield from self._hours.intervals(from_ms, merge_touching=False)

    def _running(self, from_ms: int, suspended: Iterable[Suspension]) -> Iterator[tuple[int, int]]:
        """Working intervals from `from_ms` with the suspensions cut out; they end where a suspension
        still running begins."""
        cuts = _merged(suspended)
        index = 0
        for start, end in self.intervals(from_ms):
            start = max(start, from_ms)
            while start < end:
                while index < len(cuts) and cuts[index][1] <= start:
                    index += 1
                if index == len(cuts) or cuts[index][0] >= end:
                    yield start, end
                    break
                cut_start, cut_end = cuts[index]
                if cut_start > start:
                    yield start, cut_start
                if cut_end >= FOREVER_MS:
                    return
                start = cut_end

    def working_ms(self, start_ms: int, end_ms: int, suspended: Iterable[Suspension] = ()) -> int:
        """Working time in [start_ms, end_ms) outside the suspensions (0 when end is not after start)."""
        total = 0
        if end_ms <= start_ms:
            return 0
        for start, end in self._running(start_ms, suspended):
            if start >= end_ms:
                break
            total += min(end, end_ms) - start
        return total

    def add_working_ms(self, start_ms: int, amount_ms: int,
                       suspended: Iterable[Suspension] = ()) -> int | None:
        """The earliest instant by which `amount_ms` of working time from `start_ms` has run (suspensions
        left out), so `working_ms(start, result) == amount`; None while a suspension keeps it from ending."""
        if amount_ms < 0:
            raise ValueError(f"an amount of working time cannot be negative ({amount_ms} ms)")
        if amount_ms == 0:
            return start_ms
        if not suspended:
            return self._by_minute(start_ms, amount_ms)
        return self._walk(start_ms, amount_ms, suspended)

    def _walk(self, start_ms: int, amount_ms: int, suspended: Iterable[Suspension] = ()) -> int | None:
        remaining = amount_ms
        for start, end in self._running(start_ms, suspended):
            if end - start >= remaining:
                return start + remaining
            remaining -= end - start
        return None

    def _by_minute(self, start_ms: int, amount_ms: int) -> int:
        """add_working_ms without suspensions, from what is known of the start's whole minute: every new
        case asks it (a deadline and a warning time), and cases come in thousands a minute. Within a
        minute [m, m + 1 min) the result is exact arithmetic on the minute's own result D(m) when
        - the minute is all working time and so is [D(m), D(m) + 1 min): D(t) = D(m) + (t - m), or
        - the minute has no working time at all: D(t) = D(m) (the clock starts at the same later instant).
        Otherwise (a window starts or ends inside either minute) the walk answers it."""
        minute = start_ms - start_ms % MINUTE_MS
        key = (amount_ms, minute)
        if key not in self._minutes:
            if len(self._minutes) >= _CACHED_MINUTES:
                self._minutes.clear()
            self._minutes[key] = self._minute_rule(minute, amount_ms)
        rule = self._minutes[key]
        if rule is not None:
            base, slope = rule
            return base + slope * (start_ms - minute)
        found = self._walk(start_ms, amount_ms)
        assert found is not None  # no suspension: validation guarantees every week has working time
        return found

    def _minute_rule(self, minute: int, amount_ms: int) -> tuple[int, int] | None:
        """(D(m), 1) or (D(m), 0) as _by_minute explains; None when neither holds."""
        base = self._walk(minute, amount_ms)
        assert base is not None
        working = self.working_ms(minute, minute + MINUTE_MS)
        if working == 0:
            return base, 0
        if working == MINUTE_MS and self.working_ms(base, base + MINUTE_MS) == MINUTE_MS:
            return base, 1
        return None


# Minutes remembered by WorkingCalendar._by_minute (per amount): about a week of registrations.
_CACHED_MINUTES = 20_000


def _merged(suspended: Iterable[Suspension]) -> list[tuple[int, int]]:
    spans = sorted((start, FOREVER_MS if end is None else end) for start, end in suspended)
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class SlaStatus(StrEnum):
    WITHIN = "within"
    WARNING = "warning"
    OVERDUE = "overdue"


@dataclass(frozen=True, slots=True)
class SlaTerms:
    """A case's allowance and the clock it is counted in."""

    priority: str
    allowance_ms: int
    clock: SlaClock
    # The calendar working time is counted in (also named for the calendar clock, for the record).
    calendar_name: str
    warn_at: float
    counter: WorkingCalendar

    @property
    def warning_allowance_ms(self) -> int:
        return round(self.allowance_ms * self.warn_at)

    def deadline_ms(self, registered_ms: int, suspended: Sequence[Suspension] = ()) -> int | None:
        """When the allowance is used up; closing at or before it is on time. None while suspended."""
        return self.counter.add_working_ms(registered_ms, self.allowance_ms, suspended)

    def warning_ms(self, registered_ms: int, suspended: Sequence[Suspension] = ()) -> int | None:
        """When `warn_at` of the allowance is used up (rounded to the millisecond)."""
        return self.counter.add_working_ms(registered_ms, self.warning_allowance_ms, suspended)

    def elapsed_ms(self, registered_ms: int, until_ms: int, suspended: Sequence[Suspension] = ()) -> int:
        """Allowance used between registration and `until_ms`."""
        return self.counter.working_ms(registered_ms, until_ms, suspended)

    def status(self, registered_ms: int, now_ms: int, suspended: Sequence[Suspension] = ()) -> SlaStatus:
        """Overdue after the deadline, warning from the warning time; a suspension still running counts as
        ending now (the clock stood still until now and its deadline moves on while it lasts)."""
        until_now = [(start, now_ms if end is None else end) for start, end in suspended]
        deadline = self.deadline_ms(registered_ms, until_now)
        warning = self.warning_ms(registered_ms, until_now)
        if deadline is not None and now_ms > deadline:
            return SlaStatus.OVERDUE
        if warning is not None and now_ms >= warning:
            return SlaStatus.WARNING
        return SlaStatus.WITHIN


class UnknownPriorityError(ValueError):
    """A case's priority is not in the SLA policy."""


_CACHED_TERMS = 10_000


class SlaPolicy:
    """Terms by priority, case type and department, from validated `SlaSettings`."""

    def __init__(self, settings: SlaSettings) -> None:
        self.settings = settings
        self.calendars = {name: WorkingCalendar(calendar) for name, calendar in settings.calendars.items()}
        self._every_minute = WorkingCalendar.every_minute()
        self._terms: dict[tuple[str, str | None, str | None], SlaTerms] = {}

    def terms(self, priority: str, *, case_type: str | None = None,
              department: str | None = None) -> SlaTerms:
        key = (priority, case_type, department)
        found = self._terms.get(key)
        if found is None:
            found = self._resolve(*key)
            if len(self._terms) >= _CACHED_TERMS:
                self._terms.clear()
            self._terms[key] = found
        return found

    def _resolve(self, priority: str, case_type: str | None, department: str | None) -> SlaTerms:
        base = self.settings.priorities.get(priority)
        if base is None:
            raise UnknownPriorityError(f"unknown priority {priority!r} (configured: "
                                       f"{sorted(self.settings.priorities)})")
        allowance, clock = base.allowance_minutes, base.clock
        warn_at = base.warn_at if base.warn_at is not None else self.settings.warn_at
        calendar = self.settings.calendar
        matching = [o for o in self.settings.overrides
                    if o.case_type in (None, case_type) and o.department in (None, department)
                    and o.priority in (None, priority)]
        # Least specific first, so the most specific is applied last and wins field by field.
        matching.sort(key=lambda o: (o.case_type is not None, o.department is not None,
                                     o.priority is not None))
        for override in matching:
            allowance = override.allowance_minutes or allowance
            clock = override.clock or clock
            calendar = override.calendar or calendar
            warn_at = override.warn_at or warn_at
        counter = self._every_minute if clock is SlaClock.CALENDAR else self.calendars[calendar]
        return SlaTerms(priority=priority, allowance_ms=round(allowance * MINUTE_MS), clock=clock,
                        calendar_name=calendar, warn_at=warn_at, counter=counter)
