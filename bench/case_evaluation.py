"""Measure case evaluation (processors/cases/evaluation.py) on a year of a city's cases.

    .venv/bin/python -m bench.case_evaluation [--cases 1000000] [--repeats 7] [--records]
        [--store sqlite|postgresql]

Generates the cases as columns (registered uniformly over 2026, deadlines 2 h to 5 days later, 85%
closed, some late, reworked, returned, suspended; 12 districts, 3,000 grids, 60 departments) and times
`evaluate` for the whole year and for one month, as of the period's end. `--records` also times building
the columns from `CaseRecord` objects (what a caller without a columnar store query pays once).

`--store` writes the cases into the case store (store/cases.py: a SQLite file in a temporary directory,
or a throw-away PostgreSQL cluster started as the tests start theirs, tests/support/postgres.py) and
times what `GET /v1/cases/evaluation` does: `CaseStore.evaluation_columns` (store/case_columns.py: every
case read once per process, then only the rows changed since) followed by `evaluate`; the first read,
evaluations with nothing changed, and one after 3,000 changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from core.settings import RelationalKind, RelationalSettings
from processors.cases.evaluation import NEVER_MS, CaseColumns, CaseRecord, Evaluation, evaluate
from processors.cases.model import CaseState
from store.cases import CaseQuery, CaseStore
from store.relational import PostgresDatabase, SqliteDatabase

YEAR_FROM_MS = 1_767_196_800_000  # 2026-01-01T00:00:00+08:00
DAY_MS = 86_400_000
HOUR_MS = 3_600_000


def generated_year(cases: int, seed: int = 5) -> CaseColumns:
    rng = np.random.default_rng(seed)
    registered = YEAR_FROM_MS + rng.integers(0, 365 * DAY_MS, cases, dtype=np.int64)
    deadline = registered + rng.choice(np.array([2, 4, 24, 72, 120], dtype=np.int64) * HOUR_MS, cases)
    handled = registered + rng.exponential(1.2 * DAY_MS, cases).astype(np.int64)
    closed = np.where(rng.random(cases) < 0.85, handled, NEVER_MS)
    suspended = np.where(rng.random(cases) < 0.05, rng.integers(0, 2 * DAY_MS, cases), 0)
    grid = rng.integers(0, 3000, cases, dtype=np.int64)
    return CaseColumns(
        registered_ms=registered, deadline_ms=deadline, closed_ms=closed,
        reworked=rng.choice(np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 2]), cases).astype(np.int64),
        returned=(rng.random(cases) < 0.04).astype(np.int64), suspended_ms=suspended.astype(np.int64),
        suspended_now=(closed == NEVER_MS) & (rng.random(cases) < 0.1),
        department=rng.integers(0, 60, cases, dtype=np.int64), grid=grid, district=grid % 12,
        names={"department": tuple(f"dept-{n:02d}" for n in range(60)),
               "grid": tuple(f"grid-{n:04d}" for n in range(3000)),
               "district": tuple(f"district-{n:02d}" for n in range(12))},
    )


def as_records(columns: CaseColumns) -> list[CaseRecord]:
    names = columns.names
    return [
        CaseRecord(f"case-{i}", names["department"][dept], names["grid"][grid],
                   names["district"][district], registered, deadline, None if closed == NEVER_MS else closed,
                   reworked, returned, suspended,
                   "suspended" if now else "closed" if closed != NEVER_MS else "in_progress")
        for i, (registered, deadline, closed, reworked, returned, suspended, now, dept, grid, district)
        in enumerate(zip(*(getattr(columns, c).tolist() for c in (
            "registered_ms", "deadline_ms", "closed_ms", "reworked", "returned", "suspended_ms",
            "suspended_now", "department", "grid", "district")), strict=True))
    ]


_INSERT_COLUMNS = ("case_id", "type", "state", "priority", "verify", "origin", "created_by",
                   "created_time_ms", "updated_time_ms", "description", "department", "grid", "district",
                   "open_violations",
                   "deadline_ms", "closed_time_ms", "reworked", "returns", "suspended_ms",
                   "suspended_since_ms", "row_number", "change_seq")


def store_rows(columns: CaseColumns) -> Iterator[tuple[object, ...]]:
    names = columns.names
    for i, (registered, deadline, closed, reworked, returned, suspended, now, dept, grid, district) in \
            enumerate(zip(*(getattr(columns, c).tolist() for c in (
                "registered_ms", "deadline_ms", "closed_ms", "reworked", "returned", "suspended_ms",
                "suspended_now", "department", "grid", "district")), strict=True)):
        state = "closed" if closed != NEVER_MS else "suspended" if now else "in_progress"
        yield (f"c_{i:012x}", "bin_overflow", state, "normal", "sensor", "violation", "routing", registered,
               registered, "", names["department"][dept], names["grid"][grid], names["district"][district], 0,
               deadline, None if closed == NEVER_MS else closed, reworked, returned,
               0 if now else suspended, registered + DAY_MS if now else None, i + 1, i + 1)


@contextmanager
def filled_store(kind: str, columns: CaseColumns) -> Iterator[tuple[CaseStore, Callable[[], CaseStore]]]:
    """A case store holding the generated cases (written in bulk, not case by case), and a way to open
    the same database again, as another api process would."""
    sql = (f"INSERT INTO cases ({', '.join(_INSERT_COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in _INSERT_COLUMNS)})")
    with tempfile.TemporaryDirectory(prefix="citywatch-bench-") as directory:
        if kind == "sqlite":
            store = CaseStore.open(RelationalSettings(), Path(directory))
            database = store._db
            assert isinstance(database, SqliteDatabase)
            with database.transaction():
                database.connection.executemany(sql, store_rows(columns))
            try:
                yield store, lambda: CaseStore.open(RelationalSettings(), Path(directory))
            finally:
                store.close()
            return
        from tests.support.postgres import PostgresServer

        server = PostgresServer().start()
        try:
            relational = RelationalSettings(kind=RelationalKind.POSTGRESQL,
                                            postgresql=server.create_database())
            store = CaseStore.open(relational, Path(directory))
            database = store._db
            assert isinstance(database, PostgresDatabase)
            with database._pool.connection() as connection, connection.cursor() as cursor, \
                    cursor.copy(f"COPY cases ({', '.join(_INSERT_COLUMNS)}) FROM STDIN") as copy:
                for row in store_rows(columns):
                    copy.write_row(row)
            database.execute("ANALYZE cases")
            try:
                yield store, lambda: CaseStore.open(relational, Path(directory))
            finally:
                store.close()
        finally:
            server.remove()


def timed(action: Callable[[], object], repeats: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each run (CPU time is what a shared, busy machine does not inflate)."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        action()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus


def summary(walls: list[float], cpus: list[float]) -> str:
    return (f"wall median {statistics.median(walls) * 1000:.0f} ms (best {min(walls) * 1000:.0f}), "
            f"CPU median {statistics.median(cpus) * 1000:.0f} ms (best {min(cpus) * 1000:.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--records", action="store_true", help="also time CaseColumns.from_records")
    parser.add_argument("--store", choices=("sqlite", "postgresql"),
                        help="time the evaluation through the case store (query and columns) instead")
    args = parser.parse_args()
    if args.store is not None:
        through_store(args)
        return
    columns = generated_year(args.cases)
    year_to = YEAR_FROM_MS + 365 * DAY_MS
    month_from = YEAR_FROM_MS + 181 * DAY_MS  # July
    print(f"python {platform.python_version()}, numpy {np.__version__}, {args.cases:,} cases")
    periods = (("year", YEAR_FROM_MS, year_to), ("month", month_from, month_from + 31 * DAY_MS))
    for label, start, end in periods:
        walls, cpus = timed(lambda s=start, e=end: evaluate(columns, s, e), args.repeats)
        city = evaluate(columns, start, end).city
        print(f"evaluate {label}: {summary(walls, cpus)} (registered {city.registered:,}, closure rate "
              f"{city.closure_rate:.3f}, on time {city.on_time_rate:.3f}, groups: "
              f"{len(columns.names['district'])} districts, {len(columns.names['grid'])} grids, "
              f"{len(columns.names['department'])} departments)")
    if args.records:
        records = as_records(columns)
        walls, cpus = timed(lambda: CaseColumns.from_records(records), max(1, args.repeats // 3))
        print(f"from_records: {summary(walls, cpus)}")


def through_store(args: argparse.Namespace) -> None:
    columns = generated_year(args.cases)
    year_to = YEAR_FROM_MS + 365 * DAY_MS
    month_from = YEAR_FROM_MS + 181 * DAY_MS
    print(f"python {platform.python_version()}, numpy {np.__version__}, {args.cases:,} cases in {args.store}")
    started = time.perf_counter()
    with filled_store(args.store, columns) as (store, reopen):
        print(f"written in {time.perf_counter() - started:.0f} s")
        walls, cpus = timed(lambda: store.evaluation_columns(YEAR_FROM_MS, year_to, year_to), 1)
        print(f"first read of every case, without a snapshot: {summary(walls, cpus)}")
        for label, start, end in (("year", YEAR_FROM_MS, year_to),
                                  ("month", month_from, month_from + 31 * DAY_MS)):
            def run(s: int = start, e: int = end) -> object:
                return evaluate(store.evaluation_columns(s, e, e), s, e)

            walls, cpus = timed(run, args.repeats)
            city = evaluate(store.evaluation_columns(start, end, end), start, end).city
            assert city == evaluate(columns, start, end).city, "the store's figures differ"
            print(f"{label}: columns from the store and evaluate {summary(walls, cpus)} "
                  f"(registered {city.registered:,})")
        # A day of changes between two evaluations (3,000 cases closed): read back and evaluated.
        worked = store.query(CaseQuery(states=[CaseState.IN_PROGRESS], limit=3000)).items
        with store.transaction() as tx:
            for case in worked:
                tx.update(dataclasses.replace(case, state=CaseState.CLOSED, closed_time_ms=year_to - 1), [])
        walls, cpus = timed(lambda: evaluate(store.evaluation_columns(YEAR_FROM_MS, year_to, year_to),
                                             YEAR_FROM_MS, year_to), 1)
        print(f"year after 3,000 changes: {summary(walls, cpus)}")
        walls, cpus = timed(lambda: store.checkpoint_evaluation(1), 1)
        print(f"snapshot stored: {summary(walls, cpus)}")
        # Another process (a restart, a new replica): the snapshot, then a day of changes written after it.
        worked = store.query(CaseQuery(states=[CaseState.IN_PROGRESS], limit=3000)).items
        with store.transaction() as tx:
            for case in worked:
                tx.update(dataclasses.replace(case, state=CaseState.CLOSED, closed_time_ms=year_to - 2), [])
        expected = evaluate(store.evaluation_columns(YEAR_FROM_MS, year_to, year_to), YEAR_FROM_MS, year_to)
        for label in ("first evaluation of a new process (snapshot + 3,000 changes since)",
                      "the same, again"):
            def first_evaluation() -> Evaluation:
                other = reopen()
                try:
                    return evaluate(other.evaluation_columns(YEAR_FROM_MS, year_to, year_to),
                                    YEAR_FROM_MS, year_to)
                finally:
                    other.close()

            walls, cpus = timed(first_evaluation, 1)
            assert first_evaluation().city == expected.city, "the figures from the snapshot differ"
            print(f"{label}: {summary(walls, cpus)}")


if __name__ == "__main__":
    main()
