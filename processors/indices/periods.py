"""Local calendar periods: a day, a Monday-to-Sunday week, a month, a calendar quarter or half-year.

A period is named by a key that sorts in time order within its kind ("2026-11-03", "2026-W45" (ISO week),
"2026-11", "2026-Q4", "2026-H2") and covers whole local days ("YYYY-MM-DD", as exposure totals are kept);
its instants are the local midnights in the city's time zone (`traffic.time_zone`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from core.index_settings import PeriodKind

_KEYS = {
    PeriodKind.DAY: re.compile(r"(\d{4})-(\d{2})-(\d{2})"),
    PeriodKind.WEEK: re.compile(r"(\d{4})-W(\d{2})"),
    PeriodKind.MONTH: re.compile(r"(\d{4})-(\d{2})"),
    PeriodKind.QUARTER: re.compile(r"(\d{4})-Q([1-4])"),
    PeriodKind.HALF: re.compile(r"(\d{4})-H([12])"),
}
# Periods of these years (their neighbours, for the previous period's changes, stay within the calendar).
FIRST_YEAR, LAST_YEAR = 1900, 9998
KEY_FORMS = {PeriodKind.DAY: "2026-11-03", PeriodKind.WEEK: "2026-W45", PeriodKind.MONTH: "2026-11",
             PeriodKind.QUARTER: "2026-Q4", PeriodKind.HALF: "2026-H2"}


class InvalidPeriod(ValueError):
    """A period key that does not name a period of its kind."""


@dataclass(frozen=True, order=True)
class Period:
    first: date
    last: date
    kind: PeriodKind

    @property
    def key(self) -> str:
        if self.kind is PeriodKind.DAY:
            return self.first.isoformat()
        if self.kind is PeriodKind.WEEK:
            year, week, _ = self.first.isocalendar()
            return f"{year}-W{week:02d}"
        if self.kind is PeriodKind.MONTH:
            return f"{self.first.year}-{self.first.month:02d}"
        if self.kind is PeriodKind.QUARTER:
            return f"{self.first.year}-Q{(self.first.month - 1) // 3 + 1}"
        return f"{self.first.year}-H{(self.first.month - 1) // 6 + 1}"

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def first_day(self) -> str:
        return self.first.isoformat()

    @property
    def last_day(self) -> str:
        return self.last.isoformat()

    def previous(self) -> Period:
        return period_of(self.kind, self.first - timedelta(days=1))

    def next(self) -> Period:
        return period_of(self.kind, self.last + timedelta(days=1))

    def start_ms(self, time_zone: str) -> int:
        return _midnight_ms(self.first, time_zone)

    def end_ms(self, time_zone: str) -> int:
        """The local midnight after its last day: the period is [start_ms, end_ms)."""
        return _midnight_ms(self.last + timedelta(days=1), time_zone)

    def as_json(self) -> dict[str, str | int]:
        return {"kind": self.kind.value, "key": self.key, "first_day": self.first_day,
                "last_day": self.last_day, "days": self.days}


def _midnight_ms(day: date, time_zone: str) -> int:
    return int(datetime.combine(day, time(0), ZoneInfo(time_zone)).timestamp() * 1000)


def period_of(kind: PeriodKind, day: date) -> Period:
    """The period of `kind` that holds `day`."""
    if kind is PeriodKind.DAY:
        return Period(day, day, kind)
    if kind is PeriodKind.WEEK:
        first = day - timedelta(days=day.weekday())
        return Period(first, first + timedelta(days=6), kind)
    months = {PeriodKind.MONTH: 1, PeriodKind.QUARTER: 3, PeriodKind.HALF: 6}[kind]
    first_month = (day.month - 1) // months * months + 1
    first = date(day.year, first_month, 1)
    after = date(day.year + 1, 1, 1) if first_month + months > 12 else date(day.year, first_month + months, 1)
    return Period(first, after - timedelta(days=1), kind)


def parse_period(kind: PeriodKind, key: str) -> Period:
    """The period a key names; InvalidPeriod (saying the expected form) when it names none."""
    match = _KEYS[kind].fullmatch(key)
    problem = f"{key!r} is not a {kind.value} (like {KEY_FORMS[kind]!r})"
    if match is None:
        raise InvalidPeriod(problem)
    year, number = int(match[1]), int(match[2])
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise InvalidPeriod(f"{problem}: years {FIRST_YEAR} to {LAST_YEAR}")
    try:
        if kind is PeriodKind.DAY:
            return period_of(kind, date(year, number, int(match[3])))
        if kind is PeriodKind.WEEK:
            return period_of(kind, date.fromisocalendar(year, number, 1))
        if kind is PeriodKind.MONTH:
            return period_of(kind, date(year, number, 1))
        if kind is PeriodKind.QUARTER:
            return period_of(kind, date(year, (number - 1) * 3 + 1, 1))
        return period_of(kind, date(year, (number - 1) * 6 + 1, 1))
    except ValueError as exc:
        raise InvalidPeriod(problem) from exc


def local_day(time_ms: int, time_zone: str) -> date:
    return datetime.fromtimestamp(time_ms / 1000, ZoneInfo(time_zone)).date()
