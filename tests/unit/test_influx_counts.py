"""The rollup points of InfluxDB violation counts: parts under InfluxDB's string limit, which shape a query
reads, which hours count as written since their pass."""

from __future__ import annotations

from typing import Any

from store import buckets
from store import influx_counts as counts
from store.base import Bucket

DAY = buckets.DAY_MS
HOUR = buckets.HOUR_MS
T0 = 1_795_000_000_000 // DAY * DAY


def points_of(lines: list[bytes]) -> list[dict[str, Any]]:
    """The fields of rollup lines as InfluxDB answers them (the parser of this test's own lines only)."""
    points = []
    for line in lines:
        head, _, time_ns = line.decode().rpartition(" ")
        _, _, fields = head.partition(" ")
        point: dict[str, Any] = {"time": int(time_ns)}
        if fields.startswith("parts="):
            parts, _, fields = fields.partition(",")
            point["parts"] = int(parts.removeprefix("parts=").removesuffix("i"))
        raw = fields.removeprefix("rows=")
        point["rows"] = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        points.append(point)
    return points


def test_a_large_day_is_split_into_parts_under_the_string_limit_and_read_back_whole() -> None:
    shape = counts.SHAPES[-1]
    rolled: dict[tuple[int, tuple[str, ...]], int] = {
        (T0, (f"dev-{n:05d}", "illegal_parking", "high")): n + 1 for n in range(6000)
    }
    lines = counts.rollup_lines(shape, T0, rolled)
    assert len(lines) > 1
    assert all(len(line) < 64_000 for line in lines)
    read = counts.decode_rollup_points(points_of(lines))
    assert list(read) == [T0]
    assert {(row[0], tuple(row[1:-1])): row[-1] for row in read[T0]} == rolled


def test_parts_left_from_a_larger_earlier_version_are_ignored() -> None:
    shape = counts.SHAPES[-1]
    before = counts.rollup_lines(shape, T0, {(T0, (f"dev-{n:05d}", "t", "low")): 1 for n in range(6000)})
    after = counts.rollup_lines(shape, T0, {(T0, ("dev-1", "t", "low")): 7})
    assert len(after) == 1 < len(before)
    # InfluxDB keeps the old parts 1..n; part 0 was overwritten and says there is one part now.
    stored = {p["time"]: p for p in points_of(before)} | {p["time"]: p for p in points_of(after)}
    assert counts.decode_rollup_points(stored.values()) == {T0: [[T0, "dev-1", "t", "low", 7]]}


def test_quotes_and_backslashes_in_tag_values_survive() -> None:
    shape = counts.SHAPES[0]
    rolled: dict[tuple[int, tuple[str, ...]], int] = {(T0 + HOUR, ('say "hi" \\ there',)): 3}
    assert counts.decode_rollup_points(points_of(counts.rollup_lines(shape, T0, rolled))) == {
        T0: [[T0 + HOUR, 'say "hi" \\ there', 3]]
    }


def shape_for(needed: set[str], from_ms: int, to_ms: int, bucket: Bucket | None) -> str | None:
    shape = counts.choose(needed, from_ms, to_ms, bucket)
    return None if shape is None else shape.name


def test_a_query_reads_the_first_shape_with_its_tags_whose_buckets_tile_it() -> None:
    assert shape_for({"type"}, T0, T0 + 30 * DAY, Bucket.HOUR) == "hour_type"
    assert shape_for({"type", "district"}, T0, T0 + 30 * DAY, Bucket.DAY) == "day_type_district"
    assert shape_for({"type", "district"}, T0, T0 + 30 * DAY, Bucket.HOUR) == "hour_type_district"
    assert shape_for({"device"}, T0, T0 + 30 * DAY, None) == "day_device"
    # Hour-aligned but not day-aligned: only hourly shapes tile it.
    assert shape_for({"device"}, T0 + HOUR, T0 + 30 * DAY, None) is None
    assert shape_for({"type"}, T0 + HOUR, T0 + 30 * DAY, None) == "hour_type"
    assert shape_for({"type"}, T0, T0 + 30 * DAY, Bucket.MINUTE) is None
    assert shape_for({"type"}, T0 + 1, T0 + DAY, None) is None


def test_a_day_is_written_since_its_pass_when_its_mark_changed() -> None:
    marks = {T0: 5, T0 + DAY: 6, T0 + 2 * DAY: 0}
    done = {T0: 5, T0 + DAY: 4}
    assert counts.dirty_days(marks, done) == {T0 + DAY, T0 + 2 * DAY}


def test_counts_of_every_shape_from_the_hours_of_a_day() -> None:
    tags = {"type": "red_light", "device": "cam-1", "severity": "high", "district": "nanshan"}
    got = {shape.name: rows for shape, rows in counts.shape_counts([(T0 + HOUR, tags, 2),
                                                                     (T0 + 5 * HOUR, tags, 3)]).items()}
    assert got["hour_type"] == {(T0 + HOUR, ("red_light",)): 2, (T0 + 5 * HOUR, ("red_light",)): 3}
    assert got["day_type_district"] == {(T0, ("red_light", "nanshan", "")): 5}
    assert got["day_device"] == {(T0, ("cam-1",)): 5}
