"""The control-centre queries, run against both backends (embedded SQLite and a real InfluxDB).

Every answer is checked against a plain-Python reference computed from the same data set, so the two
backends are held to one specification, and `test_backends_give_identical_answers` compares them directly.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from core.models import Location, Prediction, Violation, ViolationStatus
from store import buckets
from store.base import (
    BoundingBox,
    Bucket,
    CountRow,
    Dimension,
    LatestReadingsQuery,
    ReadingSeriesQuery,
    Store,
    TopQuery,
    TopRow,
    ViolationCountQuery,
    ViolationFilter,
    ViolationQuery,
)
from tests.support.influxdb import InfluxServer
from tests.support.query_data import (
    READINGS,
    SPAN_MS,
    T0,
    VIOLATIONS,
    load,
    opened,
)
from tests.support.stores import open_store, settle

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["embedded", "influxdb"])
def loaded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, influx_server: InfluxServer
) -> Iterator[Store]:
    """A store holding the data set (see tests/support/query_data.py)."""
    store = load(open_store(request.param, tmp_path_factory.mktemp(request.param), influx_server))
    yield store
    store.close()


# -- the reference ---------------------------------------------------------------------------------------


def tag_of(v: Violation, dimension: Dimension) -> str:
    if dimension is Dimension.DEVICE:
        return v.device_id
    if dimension is Dimension.TYPE:
        return v.type
    if dimension is Dimension.SEVERITY:
        return v.severity.value
    return v.tags.get(dimension.value, "")


def matches(v: Violation, f: ViolationFilter) -> bool:
    return (
        (not f.types or v.type in f.types)
        and (not f.device_ids or v.device_id in f.device_ids)
        and (not f.severities or v.severity.value in f.severities)
        and all(not values or v.tags.get(tag) in values for tag, values in f.tag_values().items())
    )


def newest_first(vs: list[Violation]) -> list[str]:
    return [v.violation_id for v in sorted(vs, key=lambda v: (v.start_time_ms, v.violation_id), reverse=True)]


def all_pages(store: Store, query: ViolationQuery) -> list[Violation]:
    items: list[Violation] = []
    cursor = None
    while True:
        page = store.query_violations(dataclasses.replace(query, cursor=cursor))
        items += page.items
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


# -- violations list ---------------------------------------------------------------------------------------

LIST_CASES: list[tuple[str, ViolationQuery, Any]] = [
    ("all", ViolationQuery(limit=1000), lambda v: True),
    (
        "type",
        ViolationQuery(types=("red_light", "wrong_way"), limit=1000),
        lambda v: v.type in ("red_light", "wrong_way"),
    ),
    ("device", ViolationQuery(device_ids=("cam-2",), limit=1000), lambda v: v.device_id == "cam-2"),
    ("grid", ViolationQuery(grids=("FT-11",), limit=1000), lambda v: v.tags["grid"] == "FT-11"),
    (
        "district+severity",
        ViolationQuery(districts=("nanshan",), severities=("high", "critical"), limit=1000),
        lambda v: v.tags["district"] == "nanshan" and v.severity.value in ("high", "critical"),
    ),
    (
        "department",
        ViolationQuery(departments=("traffic",), limit=1000),
        lambda v: v.tags["department"] == "traffic",
    ),
    (
        "intersection",
        ViolationQuery(intersections=("X-2",), limit=1000),
        lambda v: v.tags.get("intersection") == "X-2",
    ),
    (
        "open",
        ViolationQuery(status=ViolationStatus.OPEN, limit=1000),
        lambda v: v.status is ViolationStatus.OPEN,
    ),
    (
        "cleared+type",
        ViolationQuery(status=ViolationStatus.CLEARED, types=("bin_overflow",), limit=1000),
        lambda v: v.status is ViolationStatus.CLEARED and v.type == "bin_overflow",
    ),
    (
        "time range",
        ViolationQuery(from_ms=T0 + 3 * buckets.DAY_MS, to_ms=T0 + 9 * buckets.DAY_MS, limit=1000),
        lambda v: T0 + 3 * buckets.DAY_MS <= v.start_time_ms < T0 + 9 * buckets.DAY_MS,
    ),
    (
        "bbox",
        ViolationQuery(bbox=BoundingBox(22.44, 113.9, 22.51, 114.01), limit=1000),
        lambda v: (
            v.location is not None and 22.44 <= v.location.lat <= 22.51 and 113.9 <= v.location.lon <= 114.01
        ),
    ),
]


@pytest.mark.parametrize(("name", "query", "predicate"), LIST_CASES, ids=[c[0] for c in LIST_CASES])
def test_violation_filters(loaded: Store, name: str, query: ViolationQuery, predicate: Any) -> None:
    page = loaded.query_violations(query)
    assert [v.violation_id for v in page.items] == newest_first([v for v in VIOLATIONS if predicate(v)])
    assert page.next_cursor is None


def test_violations_round_trip_with_their_final_state(loaded: Store) -> None:
    stored = {v.violation_id: v for v in loaded.query_violations(ViolationQuery(limit=1000)).items}
    assert stored == {v.violation_id: v for v in VIOLATIONS}
    sample = VIOLATIONS[7]
    assert loaded.get_violation(sample.violation_id) == sample
    assert loaded.get_violation("no-such-id") is None


@pytest.mark.parametrize("at_day", [2, 10, 20])
def test_open_at_a_time(loaded: Store, at_day: int) -> None:
    at = T0 + at_day * buckets.DAY_MS + 7 * buckets.HOUR_MS
    page = loaded.query_violations(ViolationQuery(open_at_ms=at, limit=1000))
    expected = [
        v for v in VIOLATIONS if v.start_time_ms <= at and (v.end_time_ms is None or v.end_time_ms > at)
    ]
    assert [v.violation_id for v in page.items] == newest_first(expected)
    assert expected


@pytest.mark.parametrize("limit", [1, 7, 50])
def test_paging_returns_every_match_once_in_order(loaded: Store, limit: int) -> None:
    query = ViolationQuery(departments=("traffic",), limit=limit)
    assert [v.violation_id for v in all_pages(loaded, query)] == newest_first(
        [v for v in VIOLATIONS if v.tags["department"] == "traffic"]
    )


def test_open_paging_skips_cleared_across_pages(loaded: Store) -> None:
    query = ViolationQuery(status=ViolationStatus.OPEN, limit=9)
    assert [v.violation_id for v in all_pages(loaded, query)] == newest_first(
        [v for v in VIOLATIONS if v.status is ViolationStatus.OPEN]
    )


# -- aggregates --------------------------------------------------------------------------------------------


def reference_counts(q: ViolationCountQuery) -> list[CountRow]:
    start, end = buckets.widen(q.from_ms, q.to_ms, q.bucket)
    counted: Counter[tuple[int, tuple[str, ...]]] = Counter()
    for v in VIOLATIONS:
        if start <= v.start_time_ms < end and matches(v, q.filter):
            counted[
                (buckets.floor_ms(v.start_time_ms, q.bucket), tuple(tag_of(v, d) for d in q.group_by))
            ] += 1
    return [CountRow(b, g, n) for (b, g), n in sorted(counted.items())]


COUNT_CASES = [
    ViolationCountQuery(Bucket.HOUR, T0, T0 + 30 * buckets.DAY_MS, (Dimension.TYPE,)),
    ViolationCountQuery(Bucket.DAY, T0, T0 + 30 * buckets.DAY_MS, (Dimension.GRID, Dimension.TYPE)),
    ViolationCountQuery(Bucket.DAY, T0 + 5_000, T0 + 9 * buckets.DAY_MS + 1, (Dimension.DEVICE,)),
    ViolationCountQuery(Bucket.WEEK, T0, T0 + SPAN_MS, (Dimension.DISTRICT,)),
    ViolationCountQuery(Bucket.MONTH, T0, T0 + SPAN_MS, (Dimension.DEPARTMENT, Dimension.SEVERITY)),
    ViolationCountQuery(Bucket.MINUTE, T0, T0 + 2 * buckets.DAY_MS, ()),
    ViolationCountQuery(
        Bucket.HOUR,
        T0,
        T0 + 10 * buckets.DAY_MS,
        (Dimension.DEVICE,),
        ViolationFilter(device_ids=("cam-1", "bin-2")),
    ),
    ViolationCountQuery(
        Bucket.DAY,
        T0,
        T0 + SPAN_MS,
        (Dimension.INTERSECTION,),
        ViolationFilter(types=("red_light",), districts=("nanshan",)),
    ),
    ViolationCountQuery(
        Bucket.WEEK, T0, T0 + SPAN_MS, (Dimension.TYPE,), ViolationFilter(device_ids=("cam-3",))
    ),
]


@pytest.mark.parametrize(
    "query", COUNT_CASES, ids=[f"{q.bucket}-{'+'.join(q.group_by)}" for q in COUNT_CASES]
)
def test_counts_per_bucket(loaded: Store, query: ViolationCountQuery) -> None:
    expected = reference_counts(query)
    assert expected
    assert loaded.count_violations(query) == expected


TOP_CASES = [
    TopQuery(Dimension.DEVICE, T0, T0 + SPAN_MS, 3),
    TopQuery(
        Dimension.DEVICE, T0 + 1234, T0 + 12 * buckets.DAY_MS + 99, 10, ViolationFilter(types=("red_light",))
    ),
    TopQuery(Dimension.INTERSECTION, T0, T0 + SPAN_MS, 5),
    TopQuery(Dimension.GRID, T0 + buckets.HOUR_MS, T0 + 20 * buckets.DAY_MS, 2),
]


@pytest.mark.parametrize("query", TOP_CASES, ids=[f"{q.dimension}-{q.limit}" for q in TOP_CASES])
def test_top_n(loaded: Store, query: TopQuery) -> None:
    assert loaded.top_violations(query) == reference_top(query)


def reference_top(query: TopQuery) -> list[TopRow]:
    counted = Counter(
        tag_of(v, query.dimension)
        for v in VIOLATIONS
        if query.from_ms <= v.start_time_ms < query.to_ms and matches(v, query.filter)
    )
    counted.pop("", None)
    expected = sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))[: query.limit]
    return [TopRow(k, n) for k, n in expected]


# -- readings ----------------------------------------------------------------------------------------------


def test_raw_series_of_one_device(loaded: Store) -> None:
    q = ReadingSeriesQuery("bin-2", "temperature_c", T0, T0 + buckets.DAY_MS, limit=10_000)
    series = loaded.reading_series(q)
    expected = [
        (e.event_time_ms, float(e.attributes["temperature_c"]))
        for e in READINGS
        if e.device_id == "bin-2" and "temperature_c" in e.attributes and e.event_time_ms < q.to_ms
    ]
    assert [(p.time_ms, p.value) for p in series.points] == expected
    assert not series.truncated
    # Readings without the attribute (a fifth of them here) neither count toward nor cut a short page.
    for limit in range(1, 16):
        short = loaded.reading_series(
            ReadingSeriesQuery("bin-2", "temperature_c", T0, T0 + buckets.DAY_MS, limit=limit)
        )
        assert [(p.time_ms, p.value) for p in short.points] == expected[:limit] and short.truncated


@pytest.mark.parametrize("bucket", [Bucket.MINUTE, Bucket.HOUR, Bucket.DAY, Bucket.WEEK, Bucket.MONTH])
def test_bucketed_series(loaded: Store, bucket: Bucket) -> None:
    q = ReadingSeriesQuery(
        "bin-1", "fill_pct", T0 + 3 * buckets.HOUR_MS, T0 + 2 * buckets.DAY_MS, bucket, 10_000
    )
    start, end = buckets.widen(q.from_ms, q.to_ms, bucket)
    grouped: dict[int, list[float]] = defaultdict(list)
    for e in READINGS:
        if e.device_id == "bin-1" and start <= e.event_time_ms < end:
            grouped[buckets.floor_ms(e.event_time_ms, bucket)].append(float(e.attributes["fill_pct"]))
    got = loaded.reading_series(q)
    assert [(b.bucket_start_ms, b.count, round(b.mean, 9), b.min, b.max) for b in got.buckets] == [
        (t, len(vs), round(sum(vs) / len(vs), 9), min(vs), max(vs)) for t, vs in sorted(grouped.items())
    ]


def test_latest_reading_of_every_bin(loaded: Store) -> None:
    latest = {}
    for e in READINGS:
        if e.kind == "bin" and (
            e.device_id not in latest or e.event_time_ms > latest[e.device_id].event_time_ms
        ):
            latest[e.device_id] = e
    page = loaded.latest_readings(LatestReadingsQuery(kind="bin", attribute="fill_pct"))
    assert page.items == [latest[d] for d in sorted(latest)] and page.next_cursor is None
    first = loaded.latest_readings(LatestReadingsQuery(kind="bin", limit=2))
    second = loaded.latest_readings(LatestReadingsQuery(kind="bin", limit=2, cursor=first.next_cursor))
    assert [e.device_id for e in first.items + second.items] == ["bin-1", "bin-2", "bin-3"]
    assert second.next_cursor is None
    assert loaded.latest_readings(LatestReadingsQuery(kind="bin", attribute="pm25_ugm3")).items == []


# -- both backends side by side ---------------------------------------------------------------------------


def test_backends_give_identical_answers(tmp_path: Path, influx_server: InfluxServer) -> None:
    stores = [open_store(kind, tmp_path / kind, influx_server) for kind in ("embedded", "influxdb")]
    try:
        answers = []
        for store in stores:
            store.write_violations([opened(v) for v in VIOLATIONS[:150]])
            store.write_violations([v for v in VIOLATIONS[:150] if v.end_time_ms is not None])
            store.write_events(READINGS[:200])
            settle(store)
            answers.append(
                (
                    all_pages(store, ViolationQuery(limit=13)),
                    [store.count_violations(q) for q in COUNT_CASES],
                    [store.top_violations(q) for q in TOP_CASES],
                    store.latest_readings(LatestReadingsQuery(kind="bin")),
                    store.reading_series(ReadingSeriesQuery("bin-3", "fill_pct", T0, T0 + buckets.DAY_MS)),
                )
            )
        assert answers[0] == answers[1]
    finally:
        for store in stores:
            store.close()


@pytest.mark.parametrize("kind", ["embedded", "influxdb"])
def test_paging_is_stable_while_newer_violations_arrive(
    kind: str, tmp_path: Path, influx_server: InfluxServer
) -> None:
    store = open_store(kind, tmp_path, influx_server)
    try:
        first = VIOLATIONS[:60]
        store.write_violations(first)
        settle(store)
        expected = newest_first(first)
        seen: list[str] = []
        cursor = None
        newest = max(v.start_time_ms for v in VIOLATIONS)
        for round_ in range(100):
            page = store.query_violations(ViolationQuery(limit=8, cursor=cursor))
            seen += [v.violation_id for v in page.items]
            # Newer violations arrive between pages (one at the cursor's own millisecond, larger id).
            arrivals = [
                msgspec.structs.replace(
                    VIOLATIONS[100 + round_], violation_id=f"new-{round_}", start_time_ms=newest + round_ + 1
                )
            ]
            if page.items:
                arrivals.append(
                    msgspec.structs.replace(page.items[-1], violation_id=page.items[-1].violation_id + "~")
                )
            store.write_violations(arrivals)
            settle(store)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == expected
    finally:
        store.close()


# -- forecasts (bin near-full predictions) --------------------------------------------------------------


def forecast(device_id: str, computed_ms: int, predicted_ms: int | None, fill: float = 50.0) -> Prediction:
    return Prediction(type="bin_near_full", device_id=device_id, computed_time_ms=T0 + computed_ms,
                      predicted_time_ms=None if predicted_ms is None else T0 + predicted_ms, value=fill,
                      details={"points": 5}, location=Location(lat=22.5, lon=114.0), tags={"grid": "FT-11"})


@pytest.mark.parametrize("kind", ["embedded", "influxdb"])
def test_newest_forecast_per_device_soonest_first(kind: str, tmp_path: Path,
                                                  influx_server: InfluxServer) -> None:
    store = open_store(kind, tmp_path, influx_server)
    try:
        store.write_predictions([forecast("bin-a", 100, 9000), forecast("bin-b", 100, 5000),
                                 forecast("bin-c", 100, None)])
        store.write_predictions([forecast("bin-a", 200, 4000, fill=80)])
        store.write_predictions([forecast("bin-b", 50, 1)])  # from older readings (a replay): ignored
        store.write_predictions([forecast("bin-c", 300, None, fill=10)])
        settle(store)
        got = store.query_predictions("bin_near_full")
        assert [(p.device_id, p.predicted_time_ms) for p in got] == [
            ("bin-a", T0 + 4000), ("bin-b", T0 + 5000), ("bin-c", None)]
        assert got[0] == forecast("bin-a", 200, 4000, fill=80)
        assert got[2].value == 10
        assert store.query_predictions("bin_near_full", limit=1) == got[:1]
        assert store.query_predictions("other") == []
    finally:
        store.close()
