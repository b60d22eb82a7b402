"""The embedded store's rollups, retention sweep and schema migration."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from core.models import Event, Evidence, Severity, Violation
from store import buckets
from store.base import (
    Bucket,
    Dimension,
    EventQuery,
    ReadingSeriesQuery,
    RetentionPolicy,
    TopQuery,
    ViolationCountQuery,
    ViolationQuery,
)
from store.sqlite_store import _SCHEMA, FILE_NAME, SqliteStore, _statements

DAY = buckets.DAY_MS
NOW = 1_795_600_000_000 // DAY * DAY


def reading(n: int, t: int, fill: float) -> Event:
    return Event(
        event_id=f"e{n}",
        device_id="bin-1",
        kind="bin",
        event_time_ms=t,
        ingest_time_ms=t,
        attributes={"fill_pct": fill},
    )


def violation(n: int, t: int) -> Violation:
    return Violation(
        violation_id=f"v{n}",
        type="bin_overflow",
        severity=Severity.HIGH,
        device_id="bin-1",
        start_time_ms=t,
        updated_time_ms=t,
        evidence=Evidence(event_ids=[]),
        tags={"grid": "G"},
    )


def test_retention_removes_raw_rows_and_keeps_hourly_rollups(tmp_path: Path) -> None:
    policy = RetentionPolicy(raw_readings_days=7, rollup_days=400, violations_days=30, dead_letters_days=7)
    store = SqliteStore.in_directory(tmp_path, policy)
    old, recent = NOW - 20 * DAY, NOW - DAY
    store.write_events([reading(1, old, 10.0), reading(2, old + 60_000, 30.0), reading(3, recent, 50.0)])
    store.write_violations([violation(1, NOW - 60 * DAY), violation(2, old)])
    store.flush()
    store.apply_retention(NOW)

    assert [e.event_id for e in store.query_events(EventQuery()).items] == ["e3"]
    hourly = store.reading_series(ReadingSeriesQuery("bin-1", "fill_pct", old - DAY, NOW, Bucket.DAY))
    assert [(b.count, b.mean, b.min, b.max) for b in hourly.buckets] == [
        (2, 20.0, 10.0, 30.0),
        (1, 50.0, 50.0, 50.0),
    ]
    raw = store.reading_series(ReadingSeriesQuery("bin-1", "fill_pct", old - DAY, NOW))
    assert [p.value for p in raw.points] == [50.0]
    assert [v.violation_id for v in store.query_violations(ViolationQuery()).items] == ["v2"]
    # Counts over hours and days come from rollups, which outlive the raw violations.
    counts = store.count_violations(ViolationCountQuery(Bucket.MONTH, NOW - 90 * DAY, NOW))
    assert sum(row.count for row in counts) == 2
    assert (
        store.top_violations(TopQuery(Dimension.DEVICE, NOW // DAY * DAY - 90 * DAY, NOW // DAY * DAY))[
            0
        ].count
        == 2
    )
    store.close()


def test_a_version_1_file_is_migrated_with_its_rollups_backfilled(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / FILE_NAME)
    for statement in _statements(_SCHEMA):
        conn.execute(statement)
    conn.execute("PRAGMA user_version=1")
    conn.execute(
        "INSERT INTO events VALUES ('e1', 'bin-1', 'bin', ?, ?, 'native', NULL, NULL, ?, '{}')",
        (NOW, NOW, json.dumps({"fill_pct": 40})),
    )
    conn.execute(
        "INSERT INTO violations VALUES ('v1', 'bin_overflow', 'high', 'bin-1', 'open', ?, NULL, ?, NULL,"
        " NULL, ?, ?)",
        (NOW, NOW, json.dumps({"event_ids": []}), json.dumps({"grid": "G"})),
    )
    conn.commit()
    conn.close()

    store = SqliteStore.in_directory(tmp_path)
    assert store.query_violations(ViolationQuery(grids=("G",))).items[0].violation_id == "v1"
    counts = store.count_violations(ViolationCountQuery(Bucket.DAY, NOW, NOW + DAY, (Dimension.GRID,)))
    assert [(r.group, r.count) for r in counts] == [(("G",), 1)]
    series = store.reading_series(ReadingSeriesQuery("bin-1", "fill_pct", NOW, NOW + DAY, Bucket.HOUR))
    assert [(b.count, b.mean) for b in series.buckets] == [(1, 40.0)]
    store.close()


def test_large_integer_readings_in_one_batch_are_summarised_without_overflow(tmp_path: Path) -> None:
    # Three readings of one device and hour whose sum is beyond 64 bits (each is within them, as ingest
    # requires): a nanosecond clock attribute does this.
    big = 4_000_000_000_000_000_000
    store = SqliteStore.in_directory(tmp_path)
    events = [Event(event_id=f"n{n}", device_id="bin-1", kind="bin", event_time_ms=NOW + n,
                    ingest_time_ms=NOW + n, attributes={"sent_ns": big + n}) for n in range(3)]
    store.write_events(events)
    store.write_events([Event(event_id="n3", device_id="bin-1", kind="bin", event_time_ms=NOW + 3,
                              ingest_time_ms=NOW + 3, attributes={"sent_ns": big + 3})])
    store.flush()
    series = store.reading_series(ReadingSeriesQuery("bin-1", "sent_ns", NOW, NOW + DAY, Bucket.HOUR))
    [hour] = series.buckets
    assert hour.count == 4
    assert hour.mean == float(big)
    assert (hour.min, hour.max) == (float(big), float(big + 3))
    assert len(store.query_events(EventQuery()).items) == 4
    store.close()
