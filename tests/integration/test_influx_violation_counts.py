"""InfluxDB violation count rollups (store/influx_counts.py): exact answers whether an hour is rolled up,
written since its last pass, or only in a database from before the rollups existed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.models import Violation, ViolationStatus
from store import influx_lines
from store.base import Store, TopQuery, ViolationCountQuery
from store.influx_store import InfluxStore
from tests.integration.test_store_queries import COUNT_CASES, TOP_CASES, reference_counts, reference_top
from tests.support.influxdb import InfluxServer
from tests.support.query_data import VIOLATIONS, load, opened
from tests.support.stores import open_store, settle

pytestmark = pytest.mark.integration

# The cases a rollup answers (whole hours or days, tags some rollup keeps); the others count raw points.
ROLLED_UP_COUNTS = [COUNT_CASES[i] for i in (0, 1, 2, 3, 4, 7, 8)]
ROLLED_UP_TOPS = [TOP_CASES[i] for i in (0, 2)]


def open_influx(tmp_path: Path, server: InfluxServer, **settings: object) -> InfluxStore:
    # No background pass during a test: each test runs the passes it means to.
    store = open_store("influxdb", tmp_path, server, rollup_interval_s=3600, **settings)
    assert isinstance(store, InfluxStore)
    return store


def drop_raw_violations(store: InfluxStore) -> None:
    """What retention does to old raw points: only the rollups are left to count from."""
    for measurement in ("violations", "violation_counts_type"):
        store.query(f'DROP MEASUREMENT "{measurement}"', method="POST")


def write_states(store: Store, violations: list[Violation]) -> None:
    store.write_violations([opened(v) for v in violations])
    store.write_violations([v for v in violations if v.status is ViolationStatus.CLEARED])


@pytest.fixture(scope="module")
def rolled_up(tmp_path_factory: pytest.TempPathFactory, influx_server: InfluxServer) -> Iterator[Store]:
    """Most violations rolled up; a tenth (and a replay of others) written after the pass, so their hours
    are counted from the raw points until the next pass."""
    store = open_influx(tmp_path_factory.mktemp("rolled"), influx_server)
    late = VIOLATIONS[1::10]
    early = [v for v in VIOLATIONS if v not in late]
    write_states(store, early)
    settle(store)
    assert store.compute_violation_rollups() > 0
    settle(store)
    write_states(store, late)
    store.write_violations([opened(v) for v in VIOLATIONS[::7]])
    settle(store)
    yield store
    store.close()


@pytest.mark.parametrize(
    "query", COUNT_CASES, ids=[f"{q.bucket}-{'+'.join(q.group_by)}" for q in COUNT_CASES]
)
def test_counts_with_some_hours_written_since_the_pass(rolled_up: Store, query: ViolationCountQuery) -> None:
    assert rolled_up.count_violations(query) == reference_counts(query)


@pytest.mark.parametrize("query", TOP_CASES, ids=[f"{q.dimension}-{q.limit}" for q in TOP_CASES])
def test_top_n_with_some_hours_written_since_the_pass(rolled_up: Store, query: TopQuery) -> None:
    assert rolled_up.top_violations(query) == reference_top(query)


def test_rollups_answer_once_the_raw_points_are_gone(tmp_path: Path, influx_server: InfluxServer) -> None:
    store = open_influx(tmp_path, influx_server)
    try:
        load(store)
        days = store.compute_violation_rollups()
        assert days == len({v.start_time_ms // 86_400_000 for v in VIOLATIONS})
        settle(store)
        assert store.compute_violation_rollups() == 0  # nothing written since
        drop_raw_violations(store)
        for query in ROLLED_UP_COUNTS:
            assert store.count_violations(query) == reference_counts(query), query
        for top in ROLLED_UP_TOPS:
            assert store.top_violations(top) == reference_top(top), top
    finally:
        store.close()


# What the store wrote for a violation state before the rollups: its point, a copy in five count
# measurements, and its rule change. Only `violation_counts_type` is still written.
OLD_COUNT_MEASUREMENTS = (
    ("violation_counts_type", ("type", "district", "department")),
    ("violation_counts_intersection", ("type", "intersection")),
    ("violation_counts_device", ("device",)),
    ("violation_counts_grid", ("type", "grid", "district", "department")),
    ("violation_counts_device_type", ("type", "device")),
)


def old_format_lines(violation: Violation) -> list[bytes]:
    values = {"type": violation.type, "device": violation.device_id, **violation.tags}
    time_ns = influx_lines.point_time_ns(violation.start_time_ms, violation.violation_id)
    out = [influx_lines.violation_line(violation)]
    for name, tags in OLD_COUNT_MEASUREMENTS:
        tag_set = "".join(f",{tag}={values[tag]}" for tag in sorted(tags) if values.get(tag))
        out.append(f"{name}{tag_set} n=1i {time_ns}".encode())
    return out


def test_a_database_written_before_the_rollups_is_migrated_at_start_up(
    tmp_path: Path, influx_server: InfluxServer
) -> None:
    database = f"old_{uuid.uuid4().hex[:12]}"
    first = open_influx(tmp_path / "first", influx_server, database=database)
    first.ensure_schema()
    first.close()
    states = [opened(v) for v in VIOLATIONS] + [v for v in VIOLATIONS if v.status is ViolationStatus.CLEARED]
    body = b"\n".join(line for v in states for line in old_format_lines(v))
    written = httpx.post(f"{influx_server.url}/write", params={"db": database, "rp": "violations"},
                         content=body, timeout=30)
    assert written.status_code == 204, written.text

    store = open_influx(tmp_path / "upgraded", influx_server, database=database)
    try:
        # Before the first pass the marks are not known to cover the data: raw points answer, exactly.
        for query in ROLLED_UP_COUNTS:
            assert store.count_violations(query) == reference_counts(query), query
        days = len({v.start_time_ms // 86_400_000 for v in VIOLATIONS})
        assert store.mark_unrolled_days() == days
        settle(store)
        assert store.mark_unrolled_days() == 0  # done once: this process knows the marks are complete
        assert store.compute_violation_rollups() > 0
        settle(store)
        drop_raw_violations(store)
        for query in ROLLED_UP_COUNTS:
            assert store.count_violations(query) == reference_counts(query), query
        for top in ROLLED_UP_TOPS:
            assert store.top_violations(top) == reference_top(top), top
    finally:
        store.close()
