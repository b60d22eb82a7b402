"""Local time of day as configured: weekday names, 'HH:MM-HH:MM' windows and IANA time zone names.

Shared by every section that says when something happens in the city's own time (traffic schedules,
working calendars), so a window or a zone name means the same and is refused with the same words
everywhere.
"""

from __future__ import annotations

import itertools
import re
import zoneinfo
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

_HHMM = re.compile(r"^(?P<h1>\d{2}):(?P<m1>\d{2})-(?P<h2>\d{2}):(?P<m2>\d{2})\Z")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_window(text: str) -> tuple[int, int]:
    """'07:00-09:00' -> (420, 540) minutes after local midnight; the end may be 24:00."""
    match = _HHMM.fullmatch(text)
    if match is None:
        raise ValueError(f"time window {text!r} must look like '07:00-09:00'")
    start = int(match["h1"]) * 60 + int(match["m1"])
    end = int(match["h2"]) * 60 + int(match["m2"])
    if int(match["m1"]) > 59 or int(match["m2"]) > 59 or start >= 24 * 60 or end > 24 * 60:
        raise ValueError(f"time window {text!r} has an impossible time")
    if end <= start:
        raise ValueError(f"time window {text!r} ends before it starts; split a window across midnight "
                         "into '22:00-24:00' and '00:00-06:00'")
    return start, end


def check_windows(windows: Iterable[str]) -> list[tuple[int, int]]:
    """The windows parsed and in order; refused when one does not parse or two overlap."""
    listed = list(windows)
    spans = sorted(parse_window(window) for window in listed)
    for (_, end), (start, _) in itertools.pairwise(spans):
        if start < end:
            raise ValueError(f"time windows overlap: {listed}")
    return spans


def check_time_zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (expected an IANA name like Asia/Shanghai)") from exc
    return name


def iso_local(time_ms: int | None, zone: zoneinfo.ZoneInfo) -> str:
    """An epoch-ms instant as ISO 8601 local time with its UTC offset (2026-03-08T03:00:00.000-04:00),
    the offset in force at that instant (daylight-saving time included); "" for no time."""
    if time_ms is None:
        return ""
    return datetime.fromtimestamp(time_ms / 1000, zone).isoformat(timespec="milliseconds")
