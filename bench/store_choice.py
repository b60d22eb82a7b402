"""Measure SQLite against DuckDB as the embedded store, on the workload citywatch puts on it.

    .venv/bin/pip install duckdb      # for this measurement only: not a citywatch dependency
    .venv/bin/python bench/store_choice.py [--events 1000000] [--violations 200000]

Both stores start from what the processor holds (lists of Event / Violation structs, batches of 5,000)
and must keep the same guarantees: idempotent writes by id (a primary key / unique index) and violation
upserts where an older state never replaces a newer one. SQLite is measured through the real
`store.sqlite_store.SqliteStore` (schema, indexes, JSON encoding, executemany, one commit per batch);
DuckDB through an equivalent table per record type written from a dict of NumPy arrays (DuckDB scans those
directly, no pandas or pyarrow needed; for 5,000 readings ~25 ms, against ~1 s for one multi-row VALUES
statement and ~9 s for DuckDB's `executemany`). Queries run on a file-backed database after the writes,
each a few hundred times (pages) or a few times (aggregates); the table shows medians.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgspec
import numpy as np

from core.models import Event, Evidence, Location, Severity, Violation, ViolationStatus
from store.base import ViolationQuery
from store.sqlite_store import SqliteStore

BATCH = 5_000
HOUR_MS = 3_600_000
DAYS = 30
T_END = 1_767_225_600_000  # 2026-01-01T00:00Z
T_START = T_END - DAYS * 24 * HOUR_MS
EVENT_DEVICES = 2_000
KINDS = ("bin", "air", "noise", "parking", "track")
# Violations come from a subset of devices; 200 devices x 8 types gives ~125 violations per
# (type, device) at 200k, so the filtered page query really fills its 100 rows.
VIOLATION_DEVICES = 200
TYPES = ("bin_overflow", "air_quality", "noise", "illegal_parking", "speeding", "red_light", "bus_lane",
         "loading_zone")

_json = msgspec.json.Encoder()


# -- synthetic workload --------------------------------------------------------------------------------------


def event_batches(total: int, rng: random.Random) -> Iterator[list[Event]]:
    span = T_END - T_START
    for start in range(0, total, BATCH):
        batch = []
        for n in range(start, min(start + BATCH, total)):
            # Roughly time-ordered as live ingest is, with a few minutes of device clock jitter / lateness.
            t = T_START + n * span // total + rng.randrange(-300_000, 300_000)
            device = rng.randrange(EVENT_DEVICES)
            batch.append(
                Event(
                    event_id=f"{n:016x}{device:04x}",
                    device_id=f"dev-{device:05d}",
                    kind=KINDS[device % len(KINDS)],
                    event_time_ms=max(T_START, min(T_END - 1, t)),
                    ingest_time_ms=t + 800,
                    attributes={"fill_pct": rng.random() * 100, "battery_v": 3.0 + rng.random()},
                    location=Location(lat=52.4 + device * 1e-4, lon=13.3 + device * 1e-4),
                    source="native",
                    tags={"district": f"d{device % 12}", "grid": f"g{device % 97}"},
                )
            )
        yield batch


def make_violations(total: int, rng: random.Random) -> list[Violation]:
    span = T_END - T_START
    out = []
    for n in range(total):
        start = T_START + n * span // total + rng.randrange(-60_000, 60_000)
        start = max(T_START, min(T_END - 1, start))
        out.append(
            Violation(
                violation_id=f"{n:032x}",
                type=TYPES[rng.randrange(len(TYPES))],
                severity=Severity.HIGH,
                device_id=f"dev-{rng.randrange(VIOLATION_DEVICES):05d}",
                start_time_ms=start,
                location=Location(lat=52.5, lon=13.4),
                evidence=Evidence(
                    event_ids=[f"{n:020x}"], details={"value": rng.random() * 100, "limit": 90}
                ),
                tags={"district": f"d{n % 12}"},
                updated_time_ms=start,
            )
        )
    return out


def cleared(v: Violation) -> Violation:
    end = v.start_time_ms + 600_000
    return msgspec.structs.replace(v, status=ViolationStatus.CLEARED, end_time_ms=end, updated_time_ms=end)


def batches(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), BATCH):
        yield items[start:start + BATCH]


# -- DuckDB counterpart --------------------------------------------------------------------------------------


class DuckStore:
    """The same tables and write semantics as SqliteStore, in DuckDB.

    Only the primary keys (needed for idempotence) are declared: DuckDB answers filtered queries by
    scanning with min/max zone maps, and its ART indexes turn every update of an indexed row into a
    delete plus insert, so secondary indexes would only slow it down.
    """

    def __init__(self, path: pathlib.Path) -> None:
        import duckdb

        self.con = duckdb.connect(str(path))
        self.con.execute("""
            CREATE TABLE events (
                event_id VARCHAR PRIMARY KEY, device_id VARCHAR NOT NULL, kind VARCHAR NOT NULL,
                event_time_ms BIGINT NOT NULL, ingest_time_ms BIGINT NOT NULL, source VARCHAR NOT NULL,
                lat DOUBLE, lon DOUBLE, attributes VARCHAR NOT NULL, tags VARCHAR NOT NULL)""")
        self.con.execute("""
            CREATE TABLE violations (
                violation_id VARCHAR PRIMARY KEY, type VARCHAR NOT NULL, severity VARCHAR NOT NULL,
                device_id VARCHAR NOT NULL, status VARCHAR NOT NULL, start_time_ms BIGINT NOT NULL,
                end_time_ms BIGINT, updated_time_ms BIGINT NOT NULL, lat DOUBLE, lon DOUBLE,
                evidence VARCHAR NOT NULL, tags VARCHAR NOT NULL)""")

    def _insert(self, sql: str, columns: dict[str, list[Any]]) -> None:
        # dtype=object keeps Python str / None as they are (no fixed-width unicode copy, NULLs survive).
        arrays = {name: np.array(values, dtype=object) for name, values in columns.items()}
        self.con.register("batch", arrays)
        try:
            self.con.execute(sql)
        finally:
            self.con.unregister("batch")

    def write_events(self, events: Sequence[Event]) -> None:
        self._insert(
            "INSERT OR IGNORE INTO events SELECT * FROM batch",
            {
                "event_id": [e.event_id for e in events],
                "device_id": [e.device_id for e in events],
                "kind": [e.kind for e in events],
                "event_time_ms": [e.event_time_ms for e in events],
                "ingest_time_ms": [e.ingest_time_ms for e in events],
                "source": [e.source for e in events],
                "lat": [None if e.location is None else e.location.lat for e in events],
                "lon": [None if e.location is None else e.location.lon for e in events],
                "attributes": [_json.encode(e.attributes).decode() for e in events],
                "tags": [_json.encode(e.tags).decode() for e in events],
            },
        )

    def write_violations(self, violations: Sequence[Violation]) -> None:
        # Same rule as SqliteStore. Caveat: DuckDB 2.0.1 applies only the first row per id within one
        # statement (an open and its clear in one batch leave the violation open, silently), so a real
        # DuckDB store would have to reduce each batch to the newest state per id first. The benchmark's
        # batches never repeat an id.
        self._insert(
            """
            INSERT INTO violations SELECT * FROM batch
            ON CONFLICT (violation_id) DO UPDATE SET
                type = excluded.type, severity = excluded.severity, device_id = excluded.device_id,
                status = excluded.status, start_time_ms = excluded.start_time_ms,
                end_time_ms = excluded.end_time_ms, updated_time_ms = excluded.updated_time_ms,
                lat = excluded.lat, lon = excluded.lon, evidence = excluded.evidence, tags = excluded.tags
            WHERE excluded.updated_time_ms > violations.updated_time_ms
               OR (excluded.updated_time_ms = violations.updated_time_ms
                   AND NOT (violations.status = 'cleared' AND excluded.status = 'open'))
            """,
            {
                "violation_id": [v.violation_id for v in violations],
                "type": [v.type for v in violations],
                "severity": [v.severity.value for v in violations],
                "device_id": [v.device_id for v in violations],
                "status": [v.status.value for v in violations],
                "start_time_ms": [v.start_time_ms for v in violations],
                "end_time_ms": [v.end_time_ms for v in violations],
                "updated_time_ms": [v.updated_time_ms for v in violations],
                "lat": [None if v.location is None else v.location.lat for v in violations],
                "lon": [None if v.location is None else v.location.lon for v in violations],
                "evidence": [_json.encode(v.evidence).decode() for v in violations],
                "tags": [_json.encode(v.tags).decode() for v in violations],
            },
        )

    def query_violations(self, type_: str, device_id: str, limit: int) -> list[Violation]:
        rows = self.con.execute(
            "SELECT * FROM violations WHERE type = ? AND device_id = ? "
            "ORDER BY start_time_ms DESC, violation_id DESC LIMIT ?",
            [type_, device_id, limit + 1],
        ).fetchall()
        # Decoded exactly like SqliteStore does (same column order), so both include the same work.
        return [SqliteStore._violation_from_row(row) for row in rows[:limit]]

    def sql(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.con.execute(sql, list(params)).fetchall()

    def close(self) -> None:
        self.con.close()


# -- measurement ---------------------------------------------------------------------------------------------


def timed_writes(
    write: Callable[[Sequence[Any]], None], source: Iterator[Sequence[Any]]
) -> tuple[int, float]:
    """Rows written and seconds spent in `write` only (building the synthetic batches is not counted)."""
    rows, spent = 0, 0.0
    for batch in source:
        started = time.perf_counter()
        write(batch)
        spent += time.perf_counter() - started
        rows += len(batch)
    return rows, spent


def median_ms(run: Callable[[], object], repeat: int) -> float:
    run()  # warm caches and prepared statements
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


# {div}: integer division is `/` on SQLite integers but `//` in DuckDB (where `/` is float division).
AGG_VIOLATIONS = (
    "SELECT start_time_ms {div} 3600000 AS hour, type, count(*) FROM violations "
    "WHERE start_time_ms >= ? AND start_time_ms < ? GROUP BY hour, type"
)
AGG_EVENTS = (
    "SELECT event_time_ms {div} 3600000 AS hour, kind, count(*) FROM events "
    "WHERE event_time_ms >= ? AND event_time_ms < ? GROUP BY hour, kind"
)
EVENTS_PAGE = (
    "SELECT * FROM events WHERE device_id = ? ORDER BY event_time_ms DESC, event_id DESC LIMIT 101"
)


def measure(name: str, root: pathlib.Path, n_events: int, violations: list[Violation]) -> dict[str, float]:
    rng = random.Random(7)
    result: dict[str, float] = {}
    write_events: Callable[[Sequence[Event]], None]
    write_violations: Callable[[Sequence[Violation]], None]
    sql: Callable[[str, Sequence[Any]], list[Any]]
    page: Callable[[str, str], object]
    if name == "sqlite":
        sq = SqliteStore(root / "bench.sqlite3")

        def write_events_sqlite(b: Sequence[Event]) -> None:
            sq.write_events(b)
            sq.flush()  # the processor makes each batch durable before committing its offsets

        def write_violations_sqlite(b: Sequence[Violation]) -> None:
            sq.write_violations(b)
            sq.flush()

        write_events, write_violations = write_events_sqlite, write_violations_sqlite

        # Aggregates are not part of the Store API yet: plain SQL on a separate read connection.
        reader = sqlite3.connect(root / "bench.sqlite3")

        def sql_sqlite(query: str, params: Sequence[Any] = ()) -> list[Any]:
            return reader.execute(query, params).fetchall()

        def page_sqlite(type_: str, device: str) -> object:
            return sq.query_violations(ViolationQuery(types=(type_,), device_ids=(device,), limit=100)).items

        sql, page = sql_sqlite, page_sqlite

        close = [reader.close, sq.close]
        files = [root / "bench.sqlite3", root / "bench.sqlite3-wal"]
    else:
        dk = DuckStore(root / "bench.duckdb")
        write_events, write_violations, sql = dk.write_events, dk.write_violations, dk.sql

        def page_duckdb(type_: str, device: str) -> object:
            return dk.query_violations(type_, device, 100)

        page = page_duckdb

        close = [dk.close]
        files = [root / "bench.duckdb", root / "bench.duckdb.wal"]

    rows, secs = timed_writes(write_events, event_batches(n_events, random.Random(1)))
    result["events insert rows/s"] = rows / secs
    rows, secs = timed_writes(write_violations, batches(violations))
    result["violations insert rows/s"] = rows / secs
    changes = [cleared(v) for v in violations[: len(violations) // 2]]
    rows, secs = timed_writes(write_violations, batches(changes))
    result["violation upsert (open->cleared) rows/s"] = rows / secs
    # Same guarantees on both: every reading once, every change applied, a replayed open ignored.
    write_violations(violations[:BATCH])
    assert sql("SELECT count(*) FROM events", ()) == [(n_events,)]
    assert sql("SELECT count(*) FROM violations WHERE status = 'cleared'", ()) == [(len(changes),)]

    pairs = [(rng.choice(TYPES), f"dev-{rng.randrange(VIOLATION_DEVICES):05d}") for _ in range(200)]
    pair_iter = iter(pairs * 2)
    result["page: type+device, limit 100 (ms)"] = median_ms(lambda: page(*next(pair_iter)), len(pairs))
    devices = iter([f"dev-{rng.randrange(EVENT_DEVICES):05d}" for _ in range(401)])
    result["page: events of a device, limit 100 (ms)"] = median_ms(
        lambda: sql(EVENTS_PAGE, [next(devices)]), 400
    )
    window = [T_START, T_END]
    div = "/" if name == "sqlite" else "//"
    agg_violations, agg_events = AGG_VIOLATIONS.format(div=div), AGG_EVENTS.format(div=div)
    result["agg: violations by hour,type, 30 d (ms)"] = median_ms(lambda: sql(agg_violations, window), 5)
    result["agg: readings by hour,kind, 30 d (ms)"] = median_ms(lambda: sql(agg_events, window), 5)
    # Both engines must give the same answer (hours x types buckets, summing to every row).
    groups = sql(agg_violations, window)
    assert sum(count for *_, count in groups) == len(violations), groups[:3]
    assert all(isinstance(hour, int) for hour, *_ in groups)

    for fn in close:
        fn()
    result["file size (MB)"] = sum(f.stat().st_size for f in files if f.exists()) / 1e6
    return result


def machine() -> str:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import duckdb

    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, DuckDB {duckdb.__version__}, "
        f"{platform.system()} {platform.release()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--violations", type=int, default=200_000)
    parser.add_argument("--dir", type=pathlib.Path, default=None, help="where the database files go")
    args = parser.parse_args()

    print(machine())
    print(f"{args.events:,} readings, {args.violations:,} violations, batches of {BATCH:,}\n", flush=True)
    violations = make_violations(args.violations, random.Random(2))
    results = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for name in ("sqlite", "duckdb"):
            root = pathlib.Path(tmp) / name
            root.mkdir()
            results[name] = measure(name, root, args.events, violations)
            print(f"{name} done after {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    print("| measurement | SQLite | DuckDB |")
    print("|---|---:|---:|")
    for metric in results["sqlite"]:
        cells = []
        for name in ("sqlite", "duckdb"):
            value = results[name][metric]
            cells.append(f"{value:,.0f}" if value >= 100 else f"{value:,.2f}")
        print(f"| {metric} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
