"""Which epoch unit a time that is implausible in its field's unit was most likely sent in.

A sender that writes epoch seconds where milliseconds are expected (or nanoseconds, as InfluxDB line
protocol and many loggers do) gets every message dead-lettered as an implausible time; the detail says
which unit the number fits and the time it would then be, so the fix is obvious from one dead letter.
"""

from __future__ import annotations

from datetime import UTC, datetime

# Each unit's length in milliseconds.
_UNIT_MS: dict[str, float] = {
    "seconds": 1000.0,
    "milliseconds": 1.0,
    "microseconds": 0.001,
    "nanoseconds": 0.000_001,
}


def scale_hint(number: float, unit: str, earliest_ms: int, latest_ms: int) -> str:
    """' (this looks like seconds: 2026-12-06T09:25:35.000Z; send milliseconds)' when `number`, read in
    another unit than `unit` ("seconds", "milliseconds"), is a time between `earliest_ms` and
    `latest_ms`; '' when no unit makes it one."""
    for name, unit_ms in _UNIT_MS.items():
        if name == unit:
            continue
        time_ms = number * unit_ms
        if earliest_ms <= time_ms <= latest_ms:
            when = datetime.fromtimestamp(time_ms / 1000, UTC).isoformat(timespec="milliseconds")
            return f" (this looks like {name}: {when.replace('+00:00', 'Z')}; send {unit})"
    return ""
