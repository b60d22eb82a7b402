"""Store benchmark: write rate per backend and the latency of the control-centre dashboard queries.

    .venv/bin/python -m bench.store                      # 2,000,000 rows (readings + violations), 30 days
    .venv/bin/python -m bench.store --rows 10000000      # the issue's 10 million
    .venv/bin/python -m bench.store --backends embedded  # one backend only

Rows are 80% readings (bins and air sensors) and 20% violations (cameras and bins; 60% later cleared, which
writes a second state), spread evenly over the 30 days before now, from 2,000 devices in 100 grids, 10
districts, 3 departments and 200 intersections. They go through the same `Store` calls the processor makes
(batches of 5,000, a flush per batch); the InfluxDB time includes waiting until every point is
acknowledged. Each query then runs `--repeats` times; p50 and p95 are reported in milliseconds. The
InfluxDB backend runs against a throw-away `influxd` (Debian's 1.6) started in a temp directory.

For InfluxDB the same run also measures InfluxDB's own `/write` rate: each batch of readings and violation
states, one prepared line per record (the store's own line format), is POSTed as one request through one
HTTP connection into a scratch database just before the store writes the same batch, so both see the same
load. The store's rate (records per second) is reported as a ratio to it, with the series cardinality the
store's schema left behind and the time its violation count rollups took to catch up after the load (what a
live processor does every `rollup_interval_s`).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from core.metrics import Metrics
from core.models import Event, Evidence, Location, Severity, Violation, ViolationStatus
from core.settings import InfluxDBSettings
from store import buckets, influx_lines
from store.base import (
    Bucket,
    Dimension,
    LatestReadingsQuery,
    ReadingSeriesQuery,
    RetentionPolicy,
    Store,
    TopQuery,
    ViolationCountQuery,
    ViolationFilter,
    ViolationQuery,
)
from store.influx_store import InfluxStore
from store.sqlite_store import SqliteStore

DAYS = 30
BATCH = 5000
DEVICES = 2000
KEEP = RetentionPolicy(raw_readings_days=3650, rollup_days=3650, violations_days=3650, dead_letters_days=3650)
TYPES = [
    "illegal_parking",
    "red_light",
    "wrong_way",
    "no_helmet",
    "bin_overflow",
    "sidewalk_parking",
    "speeding",
    "blocked_box",
]


def device_tags(n: int) -> dict[str, str]:
    tags = {
        "grid": f"G-{n % 100:03d}",
        "district": f"D-{n % 10}",
        "department": ["traffic", "sanitation", "environment"][n % 3],
    }
    if n % 10 < 4:
        tags["intersection"] = f"X-{n % 200:03d}"
    return tags


def generate(rows: int, end_ms: int, seed: int = 11) -> Iterator[tuple[list[Event], list[Violation]]]:
    """Batches of readings and violations (open states, then the clears of some), in time order."""
    rng = random.Random(seed)
    start_ms = end_ms - DAYS * buckets.DAY_MS
    step = DAYS * buckets.DAY_MS / rows
    tags = [device_tags(n) for n in range(DEVICES)]
    for first in range(0, rows, BATCH):
        events: list[Event] = []
        violations: list[Violation] = []
        for n in range(first, min(rows, first + BATCH)):
            t = int(start_ms + n * step)
            device = rng.randrange(DEVICES)
            device_id = f"dev-{device:04d}"
            location = Location(lat=22.5 + device % 50 * 0.002, lon=114.0 + device // 50 * 0.002)
            if n % 5:
                kind = "bin" if device % 4 else "air"
                attributes: dict[str, Any] = (
                    {"fill_pct": rng.randrange(1000) / 10, "temperature_c": 21.5}
                    if kind == "bin"
                    else {"pm25_ugm3": rng.randrange(300)}
                )
                events.append(
                    Event(
                        event_id=f"e{n}",
                        device_id=device_id,
                        kind=kind,
                        event_time_ms=t,
                        ingest_time_ms=t + 200,
                        attributes=attributes,
                        location=location,
                        tags=tags[device],
                    )
                )
            else:
                v = Violation(
                    violation_id=f"v{n}",
                    type=TYPES[n % len(TYPES)],
                    severity=list(Severity)[n % 4],
                    device_id=device_id,
                    start_time_ms=t,
                    updated_time_ms=t,
                    location=location,
                    tags=tags[device],
                    evidence=Evidence(event_ids=[f"e{n}"], details={"speed_kmh": 61}),
                )
                violations.append(v)
                if rng.random() < 0.6:
                    end = t + rng.randrange(60_000, 3_600_000)
                    violations.append(
                        Violation(
                            violation_id=v.violation_id,
                            type=v.type,
                            severity=v.severity,
                            device_id=device_id,
                            start_time_ms=t,
                            status=ViolationStatus.CLEARED,
                            end_time_ms=end,
                            updated_time_ms=end,
                            location=location,
                            tags=v.tags,
                            evidence=v.evidence,
                        )
                    )
        yield events, violations


class RawWriter:
    """InfluxDB's own `/write`: prepared lines POSTed as they are, through one HTTP connection."""

    def __init__(self, url: str, database: str = "raw_write") -> None:
        import urllib3

        self.url = url
        self.database = database
        self.http = urllib3.PoolManager(maxsize=1)
        self._query(f"CREATE DATABASE {database}")

    def _query(self, statement: str) -> None:
        response = self.http.request(
            "POST", f"{self.url}/query", fields={"q": statement}, encode_multipart=False
        )
        assert response.status == 200, response.data[:300]

    def post(self, lines: list[bytes]) -> None:
        response = self.http.request(
            "POST",
            f"{self.url}/write?db={self.database}&precision=ns",
            body=b"\n".join(lines),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        assert response.status == 204, response.data[:300]

    def close(self) -> None:
        self._query(f"DROP DATABASE {self.database}")
        self.http.clear()


def write(store: Store, rows: int, end_ms: int, raw: RawWriter | None = None) -> dict[str, Any]:
    """The store's write rate; with `raw`, each batch is also POSTed to InfluxDB as prepared lines (one
    line per record, built before the clock starts) just before the store writes it, so that both rates
    are measured under the same load of the machine."""
    spent = raw_spent = 0.0
    points = 0
    for events, violations in generate(rows, end_ms):
        if raw is not None:
            prepared = [influx_lines.event_line(e) for e in events]
            prepared += [influx_lines.violation_line(v) for v in violations]
            started = time.perf_counter()
            raw.post(prepared)
            raw_spent += time.perf_counter() - started
        started = time.perf_counter()
        store.write_events(events)
        store.write_violations(violations)
        store.flush()
        spent += time.perf_counter() - started
        points += len(events) + len(violations)
    started = time.perf_counter()
    if isinstance(store, InfluxStore):
        store.wait_until_sent(timeout_s=3600)
    spent += time.perf_counter() - started
    out: dict[str, Any] = {
        "points": points, "seconds": round(spent, 1), "points_per_s": round(points / spent)
    }
    if raw is not None:
        own = points / raw_spent
        out["influxdb_own_write"] = {"seconds": round(raw_spent, 1), "points_per_s": round(own)}
        out["ratio_to_influxdb_write"] = round(points / spent / own, 3)
    return out


def series_cardinality(store: InfluxStore) -> dict[str, int]:
    """Series per measurement in the store's database (every retention policy)."""
    out: dict[str, int] = defaultdict(int)
    for series in store.query("SHOW SERIES"):
        for (key,) in series.get("values", []):
            out[key.split(",", 1)[0]] += 1
    out["total"] = sum(out.values())
    return dict(out)


def dashboard_queries(end_ms: int) -> dict[str, Callable[[Store], object]]:
    end = buckets.floor_ms(end_ms, Bucket.HOUR)
    day_end = buckets.floor_ms(end_ms, Bucket.DAY)
    month_ago = end - DAYS * buckets.DAY_MS
    return {
        "counts per hour by type, 30 days": lambda s: s.count_violations(
            ViolationCountQuery(Bucket.HOUR, month_ago, end, (Dimension.TYPE,))
        ),
        "counts per day by district and type, 30 days": lambda s: s.count_violations(
            ViolationCountQuery(Bucket.DAY, month_ago, end, (Dimension.DISTRICT, Dimension.TYPE))
        ),
        "counts per week by grid, one department, 30 days": lambda s: s.count_violations(
            ViolationCountQuery(
                Bucket.WEEK, month_ago, end, (Dimension.GRID,), ViolationFilter(departments=("traffic",))
            )
        ),
        "top 10 devices, 30 days": lambda s: s.top_violations(
            TopQuery(Dimension.DEVICE, day_end - DAYS * buckets.DAY_MS, day_end, 10)
        ),
        "top 10 intersections, 30 days": lambda s: s.top_violations(
            TopQuery(Dimension.INTERSECTION, day_end - DAYS * buckets.DAY_MS, day_end, 10)
        ),
        "list: open now in one district, page of 100": lambda s: s.query_violations(
            ViolationQuery(status=ViolationStatus.OPEN, districts=("D-3",), limit=100)
        ),
        "list: one grid and type, page of 100": lambda s: s.query_violations(
            ViolationQuery(grids=("G-042",), types=("red_light",), limit=100)
        ),
        "readings: one bin, hourly mean/min/max, 30 days": lambda s: s.reading_series(
            ReadingSeriesQuery("dev-0001", "fill_pct", month_ago, end, Bucket.HOUR, 1000)
        ),
        "readings: latest fill of every bin": lambda s: s.latest_readings(
            LatestReadingsQuery(kind="bin", attribute="fill_pct", limit=1000)
        ),
    }


def measure(store: Store, end_ms: int, repeats: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, run in dashboard_queries(end_ms).items():
        run(store)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            run(store)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        out[name] = {
            "p50_ms": round(statistics.median(times), 2),
            "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 2),
        }
    return out


def run_backend(kind: str, rows: int, repeats: int, workdir: Path) -> dict[str, Any]:
    end_ms = time.time_ns() // 1_000_000
    server = None
    store: Store
    if kind == "embedded":
        store = SqliteStore.in_directory(workdir / "embedded", KEEP)
    else:
        from tests.support.influxdb import InfluxServer

        (workdir / "influxd").mkdir()
        server = InfluxServer(workdir / "influxd").start()
        settings = InfluxDBSettings(url=server.url, database="bench", flush_interval_ms=100, timeout_s=60)
        influx = InfluxStore(settings, workdir / "influx-data", KEEP, metrics=Metrics())
        influx.start()
        store = influx
    report: dict[str, Any] = {}
    try:
        raw = None if server is None else RawWriter(server.url)
        report["write"] = written = write(store, rows, end_ms, raw)
        if raw is not None:
            raw.close()
        print(f"{kind}: wrote {written}", flush=True)
        if isinstance(store, InfluxStore):
            started = time.perf_counter()
            if hasattr(store, "compute_violation_rollups"):
                store.compute_violation_rollups()
            store.wait_until_sent(timeout_s=3600)
            report["rollup_catch_up_s"] = round(time.perf_counter() - started, 1)
            report["series"] = series_cardinality(store)
            print(f"{kind}: rollups caught up in {report['rollup_catch_up_s']} s; series {report['series']}",
                  flush=True)
        report["queries"] = latencies = measure(store, end_ms, repeats)
        for name, figures in latencies.items():
            print(f"{kind}: {name}: {figures}", flush=True)
        return report
    finally:
        store.close()
        if server is not None:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000, help="readings + violations to store")
    parser.add_argument("--repeats", type=int, default=30, help="runs of each query")
    parser.add_argument("--backends", default="embedded,influxdb")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "rows": args.rows,
        "days": DAYS,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    with tempfile.TemporaryDirectory(prefix="citywatch-bench-store-") as tmp:
        for kind in args.backends.split(","):
            report[kind] = run_backend(kind, args.rows, args.repeats, Path(tmp))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
