"""Violation count rollups of the InfluxDB store: what makes the 30-day dashboard aggregates fast.

InfluxDB 1.x pays per series and per point an aggregate touches: counting a month of violations grouped
by hour reads every violation point of every series the filter matches (0.7-2.2 s for ~200k violations),
whatever tags the points carry. So the counts the dashboards ask for are kept pre-aggregated: for each
rollup shape (a time bucket size, hour or day, and the tags it keeps) and each day, ONE point holds the
counts of every bucket and tag combination of that day as a JSON array of rows (`[[bucket start ms, type,
district, department, 17], ...]`). A 30-day query reads 30 points of one series and adds up in Python.

Rollups are recomputed, never incremented, so they stay exact under replays: a pass recomputes a whole day
from the raw `violations` points (one `GROUP BY time(1h), *` query) and overwrites that day's rollup points
(same series and timestamp). Which days need it is kept in InfluxDB itself, so every process (the
processor that writes, an API that only reads) agrees on it:

- every violation write also writes a *mark* per day it touched (`violation_writes`, field `version`, a
  random number per write batch), after the violation points;
- a pass snapshots the marks, recomputes the days whose mark differs from the version recorded when they
  were last rolled up (`violation_rollup_done`), then records the snapshot's versions;
- a query counts a day from the rollups only when its mark equals the recorded version (or it has no mark:
  nothing written, or expired); other days are counted from the raw points, so answers are exact before
  the next pass too, only slower.

`violation_rollup_state` says the marks cover the whole database: it is written once the first pass of a
process found every day holding violations (a database from a version without rollups gets marks for
them, so it is migrated in the background at start-up). Without it, queries count from the raw points as
before. docs/store-influxdb.md has the design and the measurements.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from store import buckets
from store.base import Bucket

ROLLUPS: Final = "violation_rollups"
WRITE_MARKS: Final = "violation_writes"
ROLLUP_DONE: Final = "violation_rollup_done"
ROLLUP_STATE: Final = "violation_rollup_state"

# The violation tags a rollup can keep (the tags of the `violations` measurement).
DIMENSIONS: Final = ("type", "device", "severity", "grid", "district", "department", "intersection")

_NS_PER_MS: Final = 1_000_000
# A string field holds at most 64 KB on InfluxDB 1.x: a bucket's rows are split into parts below that.
_PART_BYTES: Final = 48_000

_encode = msgspec.json.Encoder().encode
_decode_rows = msgspec.json.Decoder(list[list[Any]]).decode


@dataclass(frozen=True)
class Shape:
    """Counts per `size_ms` bucket and combination of `dims`, in one point per bucket."""

    name: str
    size_ms: int
    dims: tuple[str, ...]


# Smallest first (rows per day at bench/store.py's densities: 2,000 devices, 8 types, 4 severities, 100
# grids, 10 districts, 3 departments, 200 intersections); a query reads the first that has every tag it
# groups or filters by and whose buckets tile its range and bucket. Anything else counts raw points.
SHAPES: Final = (
    Shape("hour_type", buckets.HOUR_MS, ("type",)),  # 8 rows an hour, 192 a day
    Shape("day_type_district", buckets.DAY_MS, ("type", "district", "department")),  # 240
    Shape("hour_type_severity", buckets.HOUR_MS, ("type", "severity")),  # 32 an hour, 768 a day
    Shape("day_grid", buckets.DAY_MS, ("grid", "district", "department")),  # 100
    Shape("day_type_grid", buckets.DAY_MS, ("type", "severity", "grid", "district", "department")),  # 3.2k
    Shape("day_intersection", buckets.DAY_MS, ("type", "intersection")),  # 1.6k
    Shape("day_device", buckets.DAY_MS, ("device",)),  # 2k
    Shape("day_area", buckets.DAY_MS, ("type", "severity", "grid", "district", "department",
                                       "intersection")),  # 6.4k
    Shape("hour_type_district", buckets.HOUR_MS, ("type", "district", "department")),  # 240 an hour
    Shape("day_device_type", buckets.DAY_MS, ("device", "type", "severity")),  # 16k
)


def choose(needed: set[str], from_ms: int, to_ms: int, bucket: Bucket | None) -> Shape | None:
    """The first shape with every tag in `needed` whose buckets tile [from_ms, to_ms) and `bucket`."""
    if bucket is Bucket.MINUTE:
        return None
    finest_ms = buckets.HOUR_MS if bucket is Bucket.HOUR else buckets.DAY_MS if bucket is not None else None
    for shape in SHAPES:
        if finest_ms is not None and shape.size_ms > finest_ms:
            continue
        if needed <= set(shape.dims) and from_ms % shape.size_ms == 0 and to_ms % shape.size_ms == 0:
            return shape
    return None


def mark_lines(days_ms: Iterable[int], version: int) -> list[bytes]:
    return [f"{WRITE_MARKS} version={version}i {day * _NS_PER_MS}".encode() for day in sorted(days_ms)]


def done_lines(versions: Mapping[int, int]) -> list[bytes]:
    return [f"{ROLLUP_DONE} version={v}i {h * _NS_PER_MS}".encode() for h, v in sorted(versions.items())]


def state_line(now_ms: int) -> bytes:
    return f"{ROLLUP_STATE} marked=1i {now_ms * _NS_PER_MS}".encode()


def _string_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rollup_lines(shape: Shape, day_ms: int, counts: Mapping[tuple[int, tuple[str, ...]], int]) -> list[bytes]:
    """The points of one day, from counts per (bucket start, tag values): part 0 at the day's start says how
    many parts there are; part i is i ns later (parts left over from a larger earlier version of the day are
    ignored by readers)."""
    parts: list[list[list[str | int]]] = [[]]
    size = 0
    for (bucket_ms, dims), n in sorted(counts.items()):
        row: list[str | int] = [bucket_ms, *dims, n]
        row_size = len(_encode(row)) + 1
        if parts[-1] and size + row_size > _PART_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(row)
        size += row_size
    start_ns = day_ms * _NS_PER_MS
    out = []
    for index, rows in enumerate(parts):
        fields = f"rows={_string_field(_encode(rows).decode())}"
        if index == 0:
            fields = f"parts={len(parts)}i,{fields}"
        out.append(f"{ROLLUPS},shape={shape.name} {fields} {start_ns + index}".encode())
    return out


def decode_rollup_points(points: Iterable[Mapping[str, object]]) -> dict[int, list[list[Any]]]:
    """Rows (`[bucket start ms, tag values..., count]`) per day (start ms) from the points of one shape
    (columns `time` in ns, `parts`, `rows`)."""
    by_bucket: dict[int, dict[int, str]] = defaultdict(dict)
    parts: dict[int, int] = {}
    for point in points:
        time_ns = int(point["time"])  # type: ignore[call-overload]
        bucket_ms, index = divmod(time_ns, _NS_PER_MS)
        by_bucket[bucket_ms][index] = str(point["rows"])
        if index == 0:
            parts[bucket_ms] = int(point["parts"])  # type: ignore[call-overload]
    out: dict[int, list[list[Any]]] = {}
    for bucket_ms, chunks in by_bucket.items():
        count = parts.get(bucket_ms)
        if count is None:
            continue  # part 0 is written first: a bucket without it is not readable
        out[bucket_ms] = [
            row for index in range(count) if index in chunks for row in _decode_rows(chunks[index])
        ]
    return out


def shape_counts(
    hourly: Iterable[tuple[int, Mapping[str, str], int]],
) -> dict[Shape, dict[tuple[int, tuple[str, ...]], int]]:
    """Every shape's counts per (bucket start, tag values) from (hour start ms, tags of a `violations`
    series, count) rows of one day."""
    out: dict[Shape, dict[tuple[int, tuple[str, ...]], int]] = defaultdict(lambda: defaultdict(int))
    for hour_ms, tags, n in hourly:
        day_ms = hour_ms - hour_ms % buckets.DAY_MS
        for shape in SHAPES:
            bucket_ms = hour_ms if shape.size_ms == buckets.HOUR_MS else day_ms
            out[shape][(bucket_ms, tuple(tags.get(d) or "" for d in shape.dims))] += n
    return out


def dirty_days(marks: Mapping[int, int], done: Mapping[int, int]) -> set[int]:
    """Days (start ms) written since they were last rolled up."""
    return {day_ms for day_ms, version in marks.items() if done.get(day_ms) != version}

