"""Local wall-clock windows, day by day, as event-time intervals.

Traffic schedules (processors/zones.py) and working calendars (processors/cases/calendar.py) both say
"08:30-12:00 on these days" in the city's time zone. This turns such a day into half-open intervals
[start_ms, end_ms) of epoch milliseconds, whatever the server's zone, with wall-clock arithmetic across
daylight-saving changes: a local time that does not exist (the hour skipped when clocks go forward) is the
instant the clocks jumped, and one that happens twice (clocks go back) is its first occurrence. So on a
spring-forward day 01:00-04:00 lasts two hours, and 08:30-12:00 always lasts three and a half.
"""

from __future__ import annotations

import itertools
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta

FOREVER_MS = 2**62
# Days whose intervals are kept; a working calendar walks up to a few weeks at a time, a report may walk
# a year, so a year and a half covers both without growing without bound.
_CACHED_DAYS = 550

WindowsOn = Callable[[date], Sequence[tuple[int, int]]]


def local_instant_ms(day: date, minute: int, time_zone: zoneinfo.ZoneInfo) -> int:
    """Epoch ms of `minute` minutes after local midnight of `day` on the wall clock (1440 = next midnight)."""
    wall = datetime(day.year, day.month, day.day, tzinfo=time_zone) + timedelta(minutes=minute)
    first_s = int(wall.timestamp())
    if datetime.fromtimestamp(first_s, time_zone).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return first_s * 1000
    # A wall time in a spring-forward gap: fold=0 reads it with the offset before the change (an instant
    # after the change), fold=1 with the offset after (an instant before it). The change lies between.
    before_s, after_s = int(wall.replace(fold=1).timestamp()), first_s
    offset_after = datetime.fromtimestamp(after_s, time_zone).utcoffset()
    while after_s - before_s > 1:
        middle = (before_s + after_s) // 2
        if datetime.fromtimestamp(middle, time_zone).utcoffset() == offset_after:
            after_s = middle
        else:
            before_s = middle
    return after_s * 1000


class LocalHours:
    """The intervals of local windows that `windows_on(day)` gives for each local date (a pure function)."""

    def __init__(self, time_zone: zoneinfo.ZoneInfo, windows_on: WindowsOn) -> None:
        self.time_zone = time_zone
        self._windows_on = windows_on
        self._days: dict[date, tuple[tuple[int, int], ...]] = {}

    def local_date(self, time_ms: int) -> date:
        return datetime.fromtimestamp(time_ms / 1000, tz=UTC).astimezone(self.time_zone).date()

    def day_intervals(self, day: date) -> tuple[tuple[int, int], ...]:
        known = self._days.get(day)
        if known is not None:
            return known
        spans = []
        for start, end in self._windows_on(day):
            start_ms = local_instant_ms(day, start, self.time_zone)
            end_ms = local_instant_ms(day, end, self.time_zone)
            if end_ms > start_ms:  # a window inside a skipped hour lasts nothing
                spans.append((start_ms, end_ms))
        if len(self._days) >= _CACHED_DAYS:
            self._days.clear()
        self._days[day] = found = tuple(spans)
        return found

    def active_at(self, time_ms: int) -> bool:
        return any(start <= time_ms < end for start, end in self.day_intervals(self.local_date(time_ms)))

    def intervals(self, from_ms: int, days: int | None = None,
                  merge_touching: bool = True) -> Iterator[tuple[int, int]]:
        """Intervals that end after `from_ms`, in order, searched over `days` local dates from the one of
        `from_ms` (None: without end). Touching ones are merged (22:00-24:00 and the next 00:00-06:00 are
        one) unless `merge_touching` is false, which an unbounded search of a schedule that never stops
        needs to yield anything at all."""
        first_day = self.local_date(from_ms)
        offsets = range(days) if days is not None else itertools.count()
        pending: tuple[int, int] | None = None
        for offset in offsets:
            for start, end in self.day_intervals(first_day + timedelta(days=offset)):
                if merge_touching and pending is not None and start <= pending[1]:
                    pending = (pending[0], max(pending[1], end))
                    continue
                if pending is not None and pending[1] > from_ms:
                    yield pending
                pending = (start, end)
        if pending is not None and pending[1] > from_ms:
            yield pending
