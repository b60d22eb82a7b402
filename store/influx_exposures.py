"""Exposure totals (the denominators of the indices, core/exposures.py) on InfluxDB.

One point per (local day, device, counter) in measurement `exposures` of the `rollup` retention policy:
tags `counter` and `device` (bounded: the registry's devices times the counter names), timestamp the
day's date at 00:00 UTC (a label of the city's local day: the store does not apply a time zone), fields
`value` and the device's place (`intersection`, `grid`, `district`, "" when it has none). InfluxDB keeps
one point per measurement, tag set and timestamp, so a later total for the same day, device and counter
overwrites the earlier one, place included: the embedded store's upsert, point for point.

The place is a field, not a tag, so that a device moved to another grid overwrites its day's point
instead of leaving a second one under the old tags. Sums per device or for the city are computed by
InfluxDB; sums per intersection, grid or district read the day's points and add them up here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any, Final

from core.exposures import PLACE_KINDS
from core.models import ExposureTotal
from store.base import ExposureQuery, ExposureSum

# InfluxQL rows as dicts with the series tags merged in (InfluxStore._rows).
Rows = Callable[[str], list[dict[str, Any]]]

EXPOSURES: Final = "exposures"
# The place tags of a device that exposures are summed over, stored as fields.
PLACE_FIELDS: Final = ("intersection", "grid", "district")
_NS_PER_DAY: Final = 86_400 * 1_000_000_000


def day_start_ns(day: str) -> int:
    """The point time of a local day "YYYY-MM-DD": that date at 00:00 UTC."""
    return (date.fromisoformat(day) - date(1970, 1, 1)).days * _NS_PER_DAY


def _tag_value(value: str) -> str:
    # Line protocol: commas, equals signs and spaces are escaped in tag values; a trailing backslash
    # would escape the separator after it.
    value = value.replace("\n", " ").rstrip("\\")
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _string_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def exposure_lines(totals: Sequence[ExposureTotal]) -> list[bytes]:
    return [
        (f"{EXPOSURES},counter={_tag_value(t.counter)},device={_tag_value(t.device_id)} "
         f"value={float(t.value)!r},"
         + ",".join(f"{name}={_string_field(t.tags.get(name, ''))}" for name in PLACE_FIELDS)
         + f" {day_start_ns(t.day)}").encode()
        for t in totals
    ]


def exposure_sums(rows: Rows, source: str, query: ExposureQuery) -> list[ExposureSum]:
    """Sums per place and counter from the measurement `source` (qualified with its retention policy)."""
    if query.group_by not in PLACE_KINDS:
        raise ValueError(f"exposures cannot be grouped by {query.group_by!r}; "
                         f"one of {', '.join(PLACE_KINDS)}")
    where = [f"time >= {day_start_ns(query.first_day)}",
             f"time < {day_start_ns(query.last_day) + _NS_PER_DAY}"]
    if query.counters:
        where.append("(" + " OR ".join(f'"counter" = {_quote_string(c)}' for c in query.counters) + ")")
    condition = " AND ".join(where)
    sums: dict[tuple[str, str], float] = defaultdict(float)
    if query.group_by in ("device", "city"):
        grouping = '"device", "counter"' if query.group_by == "device" else '"counter"'
        for row in rows(f"SELECT sum(value) AS total FROM {source} WHERE {condition} GROUP BY {grouping}"):
            place = row["device"] if query.group_by == "device" else ""
            sums[(place, row["counter"])] += float(row["total"])
    else:
        field = f'"{query.group_by}"'  # one of PLACE_FIELDS
        for row in rows(f'SELECT value, {field} FROM {source} WHERE {condition} GROUP BY "counter"'):
            place = row.get(query.group_by) or ""
            if place:  # a device without this place (a bin has no intersection) is left out
                sums[(place, row["counter"])] += float(row["value"])
    return [ExposureSum(place=place, counter=counter, value=value)
            for (place, counter), value in sorted(sums.items())]
