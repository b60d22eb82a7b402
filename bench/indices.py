"""Measure the month's indices (docs/indices.md) for 5,000 intersections in 100 districts, embedded (SQLite).

    .venv/bin/python -m bench.indices [--intersections 5000] [--districts 100] [--repeats 5]

Writes two months of exposure totals (October and November 2026: each intersection's camera counts the ten
traffic counters every local day, each grid's bin the two bin counters) into a SQLite event store in a
temporary directory; to keep the set-up short on a shared machine they are written without the month-sum
triggers and the month sums are then built as a file from before them gains them (dropped, and filled
from the totals when the store opens: the same sums). Then, on the store opened again (cold: a new
process's first query), it times what the API does:
`IndexService.figures` of November at the intersection level and at the district level (each with
October's sums for the changes and ranks), then all four levels together; then again (warm).

It also prints what the month sums cost the writer: the same days of totals written into a store that keeps
them (triggers on `exposure_totals`) and into one whose triggers were dropped.
"""

from __future__ import annotations

import argparse
import platform
import random
import sqlite3
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from core.index_settings import IndexSettings, PeriodKind
from core.models import ExposureTotal
from processors.indices.periods import parse_period
from processors.indices.service import IndexService
from store.base import RetentionPolicy
from store.sqlite_store import SqliteStore

TRAFFIC = (("stop_line_crossings", "red_light_crossings", 0.02),
           ("crosswalk_encounters", "crosswalk_not_yielded", 0.2),
           ("riders_observed", "riders_without_helmet", 0.3),
           ("vehicles_measured", "vehicles_speeding", 0.1),
           ("parking_occupied_minutes", "parking_illegal_minutes", 0.3))
INTERSECTIONS_PER_GRID = 5
# Nothing expires during the run.
KEEP_ALL = RetentionPolicy(raw_readings_days=3650, rollup_days=3650, violations_days=3650,
                           dead_letters_days=3650)


def write_city(store: SqliteStore, intersections: int, districts: int, first: date, days: int) -> int:
    rng = random.Random(3)
    grids = intersections // INTERSECTIONS_PER_GRID
    written = 0
    for n in range(days):
        day = (first + timedelta(days=n)).isoformat()
        batch = []
        for x in range(intersections):
            grid = x // INTERSECTIONS_PER_GRID
            tags = {"intersection": f"x-{x:05d}", "grid": f"g-{grid:04d}",
                    "district": f"d-{grid % districts:03d}"}
            volume = rng.randint(500, 5000)
            for observed, breaking, rate in TRAFFIC:
                batch.append(ExposureTotal(day=day, device_id=f"cam-{x:05d}", counter=observed, value=volume,
                                           tags=tags))
                batch.append(ExposureTotal(day=day, device_id=f"cam-{x:05d}", counter=breaking,
                                           value=int(volume * rate * rng.random()), tags=tags))
        for grid in range(grids):
            tags = {"grid": f"g-{grid:04d}", "district": f"d-{grid % districts:03d}"}
            batch.append(ExposureTotal(day=day, device_id=f"bin-{grid:04d}", counter="bin_minutes",
                                       value=1440, tags=tags))
            batch.append(ExposureTotal(day=day, device_id=f"bin-{grid:04d}", counter="bin_overflow_minutes",
                                       value=rng.randint(0, 200), tags=tags))
        store.write_exposures(batch)
        store.flush()  # a day at a time, as the processor commits its batches
        written += len(batch)
    return written


def without_month_sums(directory: Path) -> None:
    """Drops the month sums and their triggers, as a file written before them was."""
    with sqlite3.connect(directory / "citywatch.sqlite3") as raw:
        for trigger in ("insert", "update", "delete"):
            raw.execute(f"DROP TRIGGER IF EXISTS exposure_month_sums_{trigger}")
        raw.execute("DROP TABLE IF EXISTS exposure_month_sums")


def write_cost(intersections: int, districts: int, days: int) -> None:
    """Seconds to write `days` of a city's totals with and without the month-sum triggers."""
    for keep_sums in (True, False):
        with tempfile.TemporaryDirectory() as directory:
            store = SqliteStore.in_directory(Path(directory), KEEP_ALL)
            if not keep_sums:  # while it is open: opening creates them again
                without_month_sums(Path(directory))
            started = time.perf_counter()
            rows = write_city(store, intersections, districts, date(2026, 10, 1), days)
            elapsed = time.perf_counter() - started
            store.close()
        print(f"  writing {rows:,} totals {'with' if keep_sums else 'without'} month sums: {elapsed:.1f} s "
              f"({rows / elapsed:,.0f} totals/s)", flush=True)


def timed(label: str, action: object, repeats: int) -> None:
    """Wall and CPU time of the first call (cold) and the median of the others (warm)."""
    assert callable(action)
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        action()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    warm_wall, warm_cpu = statistics.median(walls[1:] or walls), statistics.median(cpus[1:] or cpus)
    print(f"  {label:<44} cold {walls[0] * 1000:6.0f} ms (CPU {cpus[0] * 1000:5.0f})   warm median "
          f"{warm_wall * 1000:6.0f} ms (CPU {warm_cpu * 1000:5.0f})   (n={repeats})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intersections", type=int, default=5000)
    parser.add_argument("--districts", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write-days", type=int, default=3, help="Days written for the write cost; 0: skip.")
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, {args.intersections} intersections, "
          f"{args.districts} districts")
    november = parse_period(PeriodKind.MONTH, "2026-11")
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory)
        store = SqliteStore.in_directory(path, KEEP_ALL)
        without_month_sums(path)  # while it is open: opening creates them again
        started = time.perf_counter()
        rows = write_city(store, args.intersections, args.districts, date(2026, 10, 1), 61)
        print(f"  wrote {rows:,} daily totals in {time.perf_counter() - started:.1f} s", flush=True)
        store.close()
        without_month_sums(path)
        started = time.perf_counter()
        SqliteStore.in_directory(path, KEEP_ALL).close()
        print(f"  month sums built from them at open in {time.perf_counter() - started:.1f} s", flush=True)
        store = SqliteStore.in_directory(path, KEEP_ALL)  # reopened: nothing cached in the process
        service = IndexService(IndexSettings(), "Asia/Shanghai", store)
        for label, levels in (("traffic, intersections (?level=intersection)", ("intersection",)),
                              ("traffic, districts (?level=district)", ("district",)),
                              ("traffic, all four levels", ("intersection", "grid", "district", "city"))):
            timed(label, lambda levels=levels: service.figures(november, levels, ("traffic",)), args.repeats)
        figures = service.figures(november)["traffic"]
        print(f"  places: {len(figures.levels['intersection'])} intersections, "
              f"{len(figures.levels['grid'])} grids, {len(figures.levels['district'])} districts")
        store.close()
    if args.write_days:
        write_cost(args.intersections, args.districts, args.write_days)


if __name__ == "__main__":
    main()
