"""Benchmark of the case intake (docs/cases.md): can the cases keep up with 1,000 violation changes/s, and
does routing violations into cases slow ingest?

Two parts:

1. **intake**: the case intake alone (routing, de-duplication, the case store's transactions) applying a
   generated stream of violation changes, on SQLite and on PostgreSQL: many distinct bins, each
   overflowing and being emptied, with a second overflow of the same bin joining the open case, replays
   of changes already applied (a processor's replay, a second api replica) and changes no route takes.
   The changes are handed over all at once and the figure is changes applied per second until the
   intake's barrier returns. Then (SQLite) the same changes paced at 1,000/s, ten every 10 ms as the
   feed hands them over: the intake thread's CPU per change and the chunks it applied them in.
2. **pipeline**: `citywatch up`'s embedded runtime (as bench/e2e.py), a publisher process sending bin
   readings (`--workload`, by default `overflow`: every bin overflows and is emptied every tenth reading)
   as fast as the pipeline takes them, once without case routes and once with every violation routed
   into cases; reports stored events/s both ways, the violation changes the cases took and what was left
   queued.
   With `--rate`, the publisher offers that many events a second instead (4,000/s of the `overflow`
   workload make 1,000 violation changes/s): the question is then whether ingest's publish-to-stored
   latency and CPU per event change when the cases take every violation.

Prints Markdown tables; results also go to bench/results/cases.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.e2e import StoredClock, machine, publish
from citywatch.runtime import EmbeddedRuntime
from core.case_settings import CaseSettings
from core.models import Evidence, Location, Severity, Violation, ViolationStatus
from core.settings import DeviceSettings, PostgresSettings, RelationalKind, RelationalSettings, Settings
from processors.cases.intake import CaseIntake
from processors.cases.intake_process import CaseIntakeProcess
from processors.cases.routing import CaseRouter
from processors.cases.service import CaseService
from processors.outputs.feed import FeedEntry
from store.cases import CaseStore

GRIDS = [f"FT-{index:02d}" for index in range(20)]
ROUTES = CaseSettings.model_validate({"routes": [
    {"match": {"types": ["bin_overflow"], "grids": GRIDS[:10], "hours": ["06:00-22:00"]},
     "department": "sanitation", "category": "0101", "priority": "high"},
    {"match": {"types": ["bin_overflow"], "hours": ["22:00-24:00", "00:00-06:00"]},
     "department": "sanitation-night", "category": "0101"},
    {"match": {"types": ["bin_overflow"]}, "department": "sanitation-east", "category": "0101"},
    {"match": {"types": ["bin_fire"]}, "department": "fire", "category": "0105", "priority": "urgent"},
]})
T0_MS = 1_796_572_800_000  # Monday 2026-12-07 00:00 Asia/Shanghai


def change(violation_id: str, bin_id: str, grid: str, time_ms: int, status: ViolationStatus,
           violation_type: str = "bin_overflow") -> Violation:
    return Violation(
        violation_id=violation_id, type=violation_type, severity=Severity.MEDIUM, device_id=bin_id,
        start_time_ms=time_ms, updated_time_ms=time_ms, status=status,
        end_time_ms=None if status is ViolationStatus.OPEN else time_ms + 60_000,
        location=Location(lat=22.54, lon=114.05), evidence=Evidence(event_ids=[f"e-{violation_id}"]),
        tags={"grid": grid, "district": "futian", "department": "sanitation"})


def violation_changes(total: int, bins: int, seed: int = 7) -> list[Violation]:
    """About `total` changes over `bins` bins, a window of bins at a time: each bin's overflow opens; a
    quarter of them see a second overflow join the open case; a tenth of the changes are replays of one
    already sent; one in ten bins also reports a change no route takes (low battery); then the bins are
    emptied and their overflows clear, so the next overflow of a bin opens a new case."""
    rng = random.Random(seed)
    changes: list[Violation] = []
    episode = 0
    window = max(1, min(bins, 500))
    while len(changes) < total:
        for first in range(0, bins, window):
            if len(changes) >= total:
                break
            opened: list[Violation] = []
            cleared: list[Violation] = []
            for index in range(first, min(first + window, bins)):
                bin_id, grid = f"bin-{index:05d}", GRIDS[index % len(GRIDS)]
                time_ms = T0_MS + episode * 3_600_000 + index * 7_000
                ids = [f"vo-{index}-{episode}"]
                if rng.random() < 0.25:
                    ids.append(f"vo-{index}-{episode}-b")
                for number, violation_id in enumerate(ids):
                    opened.append(change(violation_id, bin_id, grid, time_ms + number * 60_000,
                                         ViolationStatus.OPEN))
                    cleared.append(change(violation_id, bin_id, grid, time_ms + 1_800_000,
                                          ViolationStatus.CLEARED))
                if rng.random() < 0.1:
                    opened.append(change(f"vb-{index}-{episode}", bin_id, grid, time_ms, ViolationStatus.OPEN,
                                         "low_battery"))
            rng.shuffle(opened)
            rng.shuffle(cleared)
            for phase in (opened, cleared):
                replays = rng.sample(phase, len(phase) // 9)
                changes.extend(phase + replays)
        episode += 1
    return changes[:total]


@contextmanager
def postgres_database() -> Iterator[RelationalSettings]:
    """A throw-away PostgreSQL server (Debian's package, as the tests run it), one empty database."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.postgres import PostgresServer

    server = PostgresServer().start()
    try:
        settings: PostgresSettings = server.create_database()
        yield RelationalSettings(kind=RelationalKind.POSTGRESQL, postgresql=settings)
    finally:
        server.remove()


def measure_intake(relational: RelationalSettings, changes: list[Violation]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="citywatch-bench-cases-") as data_dir:
        store = CaseStore.open(relational, Path(data_dir))
        try:
            service = CaseService(store, CaseRouter(ROUTES, "Asia/Shanghai"))
            intake = CaseIntake(service, capacity=len(changes) + 1)
            entries = [FeedEntry(seq, violation, 0) for seq, violation in enumerate(changes, start=1)]
            intake.start()
            started = time.perf_counter()
            intake(entries)
            intake.barrier()
            elapsed_s = time.perf_counter() - started
            intake.stop()
            cases = store_counts(store)
        finally:
            store.close()
    return {"backend": relational.kind.value, "changes": len(changes), "elapsed_s": round(elapsed_s, 2),
            "changes_per_s": round(len(changes) / elapsed_s), "applied": intake.applied,
            "failed": intake.failed, **cases}


class ChunkCounting(CaseService):
    """The service, counting the chunks (transactions) the intake applies."""

    chunks = 0

    def violation_changes(self, violations: Sequence[Violation]) -> None:
        self.chunks += 1
        super().violation_changes(violations)


def measure_paced(changes: list[Violation], per_s: int = 1000, hand_off: int = 10) -> dict[str, Any]:
    """The intake fed `per_s` changes a second, `hand_off` at a time: its thread's CPU per change."""
    with tempfile.TemporaryDirectory(prefix="citywatch-bench-cases-") as data_dir:
        store = CaseStore.open(RelationalSettings(), Path(data_dir))
        try:
            service = ChunkCounting(store, CaseRouter(ROUTES, "Asia/Shanghai"))
            intake = CaseIntake(service, capacity=len(changes) + 1)
            entries = [FeedEntry(seq, violation, 0) for seq, violation in enumerate(changes, start=1)]
            intake.start()
            cpu_before = thread_cpu_s(intake)
            started = time.perf_counter()
            for index in range(0, len(entries), hand_off):
                intake(entries[index:index + hand_off])
                time.sleep(max(0.0, started + (index + hand_off) / per_s - time.perf_counter()))
            intake.barrier()
            cpu_s = thread_cpu_s(intake) - cpu_before
            intake.stop()
        finally:
            store.close()
    return {"changes": len(changes), "per_s": per_s, "hand_off": hand_off,
            "intake_cpu_us_per_change": round(cpu_s * 1e6 / len(changes)), "chunks": service.chunks,
            "mean_chunk": round(len(changes) / max(1, service.chunks))}


def store_counts(store: CaseStore) -> dict[str, int]:
    database = store._db  # the bench reads the tables directly: no API for counting
    cases = database.execute("SELECT COUNT(*) FROM cases").one()
    closed = database.execute("SELECT COUNT(*) FROM cases WHERE state = 'closed'").one()
    linked = database.execute("SELECT COUNT(*) FROM case_violations").one()
    return {"cases": int(cases[0]) if cases else 0, "closed": int(closed[0]) if closed else 0,
            "linked_violations": int(linked[0]) if linked else 0}


def intake_part(args: argparse.Namespace) -> list[dict[str, Any]]:
    changes = violation_changes(args.changes, args.bins)
    results = []
    for backend in args.backends.split(","):
        if backend == "sqlite":
            results.append(measure_intake(RelationalSettings(), changes))
        elif backend == "postgresql":
            with postgres_database() as relational:
                results.append(measure_intake(relational, changes))
        else:
            raise SystemExit(f"unknown backend {backend!r}: sqlite or postgresql")
        print(json.dumps(results[-1]), flush=True)
    print("\n| backend | changes | seconds | changes/s | cases (closed) | linked violations |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['backend']} | {r['changes']:,} | {r['elapsed_s']} | **{r['changes_per_s']:,}** "
              f"| {r['cases']:,} ({r['closed']:,}) | {r['linked_violations']:,} |")
    if "sqlite" in args.backends.split(","):
        paced = measure_paced(changes[:args.paced])
        print(json.dumps(paced), flush=True)
        print("\n| backend | changes | per second | hand-offs of | chunks (mean size) "
              "| intake CPU per change |")
        print("|---|---:|---:|---:|---:|---:|")
        print(f"| sqlite | {paced['changes']:,} | {paced['per_s']:,} | {paced['hand_off']} "
              f"| {paced['chunks']:,} ({paced['mean_chunk']}) | **{paced['intake_cpu_us_per_change']} us** |")
        results.append({"backend": "sqlite", "paced": paced})
    return results


def run_pipeline(events: int, routed: bool, workload: str, rate: float = 0) -> dict[str, Any]:
    """One embedded runtime, a publisher sending `events` bin readings flat out (or `rate` a second);
    with `routed`, every violation the rules open (whatever its type) is routed into a case."""
    devices = [DeviceSettings(device_id=f"bench-{i:05d}", kind="bin",
                              tags={"grid": GRIDS[i % len(GRIDS)], "district": "futian"})
               for i in range(1000)]
    clock = StoredClock()
    with tempfile.TemporaryDirectory(prefix="citywatch-bench-cases-") as data_dir:
        cases = {"routes": [{"match": {}, "department": "sanitation", "category": "0101"}]} if routed else {}
        settings = Settings(devices=devices).with_overrides(
            store__data_dir=data_dir, mqtt__embedded_broker="auto", mqtt__embedded_port=0, cases=cases)
        runtime = EmbeddedRuntime(settings, on_stored=clock)
        runtime.start()
        try:
            assert runtime.mqtt_url is not None
            cpu_before = resource.getrusage(resource.RUSAGE_SELF)
            intake_cpu_before = thread_cpu_s(runtime.alerts.case_intake)
            publish(runtime.mqtt_url, events, rate, f"bench-cases-{int(routed)}", workload)
            if not clock.wait_for(events, 300):
                raise SystemExit(f"only {len(clock.latencies_ms)} of {events} events were stored")
            assert clock.first_ns is not None and clock.last_ns is not None
            stored_s = (clock.last_ns - clock.first_ns) / 1e9
            intake = runtime.alerts.case_intake
            queued_at_end = intake.queued() if intake is not None else 0  # not yet taken by the cases
            if intake is not None:
                intake.barrier()
            cpu_after = resource.getrusage(resource.RUSAGE_SELF)
            cpu_s = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
            intake_cpu_s = thread_cpu_s(intake) - intake_cpu_before
            changes = {"applied": 0, "dropped": 0, "failed": 0, "queued_at_end": queued_at_end}
            if intake is not None:
                changes.update(applied=intake.applied, dropped=intake.dropped, failed=intake.failed)
        finally:
            runtime.stop()
    latencies = sorted(clock.latencies_ms)
    return {"routed": routed, "workload": workload, "events": events, "offered_per_s": rate or None,
            "stored_events_per_s": round(events / max(1e-9, stored_s)),
            "latency_ms": {name: round(latencies[min(len(latencies) - 1, int(len(latencies) * q))], 1)
                           for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))},
            "case_changes_per_s": round(changes["applied"] / max(1e-9, stored_s)),
            "process_cpu_ms_per_1000_events": round(cpu_s * 1e6 / events),
            "intake_cpu_s": round(intake_cpu_s, 2), "process_cpu_s": round(cpu_s, 2), **changes}


def thread_cpu_s(intake: CaseIntake | None) -> float:
    """CPU time (user and system) of the intake's worker thread so far, and of its child process where
    it has one (`citywatch up`: CaseIntakeProcess), from /proc (Linux)."""
    thread = intake._thread if intake is not None else None
    if thread is None or thread.native_id is None:
        return 0.0
    paths = [Path(f"/proc/self/task/{thread.native_id}/stat")]
    if isinstance(intake, CaseIntakeProcess) and intake.child_pid is not None:
        paths.append(Path(f"/proc/{intake.child_pid}/stat"))
    total = 0.0
    for path in paths:
        fields = path.read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def pipeline_part(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for _ in range(args.repeats):
        for routed in (False, True):
            results.append(run_pipeline(args.events, routed, args.workload, args.rate))
            print(json.dumps(results[-1]), flush=True)
    print("\n| case routes | workload | events | offered/s | stored events/s | publish-to-stored p50 / p90 / "
          "p99 ms | violation changes to cases/s | dropped | queued when the last event was stored "
          "| process CPU ms / 1,000 events | intake thread CPU s / process CPU s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        latency = r["latency_ms"]
        print(f"| {'every violation' if r['routed'] else 'none'} | {r['workload']} | {r['events']:,} "
              f"| {r['offered_per_s'] or 'flat out'} | **{r['stored_events_per_s']:,}** "
              f"| {latency['p50']} / {latency['p90']} / {latency['p99']} "
              f"| {r['case_changes_per_s']:,} | {r['dropped']:,} "
              f"| {r['queued_at_end']:,} | {r['process_cpu_ms_per_1000_events']:,} "
              f"| {r['intake_cpu_s']} / {r['process_cpu_s']} |")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["intake", "pipeline", "both"], default="both")
    parser.add_argument("--changes", type=int, default=50_000, help="violation changes for the intake part")
    parser.add_argument("--paced", type=int, default=10_000,
                        help="changes fed at 1,000/s after the intake part's all-at-once run (SQLite)")
    parser.add_argument("--bins", type=int, default=5_000, help="distinct bins in the intake part")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--events", type=int, default=60_000, help="events published in the pipeline part")
    parser.add_argument("--repeats", type=int, default=1, help="pipeline runs each way")
    parser.add_argument("--rate", type=float, default=0,
                        help="events/s the pipeline part's publisher offers (0: flat out); the overflow "
                             "workload makes a violation change of every fourth event")
    parser.add_argument("--workload", choices=["filling", "churn", "overflow"], default="overflow",
                        help="the publisher's (bench/publisher.py); overflow: two violation changes every "
                        "ten readings")
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    results: dict[str, Any] = {"machine": machine()}
    if args.part in ("intake", "both"):
        results["intake"] = intake_part(args)
    if args.part in ("pipeline", "both"):
        results["pipeline"] = pipeline_part(args)
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "cases.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
