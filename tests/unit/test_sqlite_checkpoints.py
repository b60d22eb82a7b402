"""The SQLite store's WAL once started: copied back into the database file by a thread of its own, and
reused from its start instead of growing while the processor keeps writing."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator

import pytest

from core.models import Event
from store import sqlite_store
from store.base import EventQuery
from store.sqlite_store import SqliteStore
from tests.support.wait import wait_for

T0 = 1_700_000_000_000
PAGE = 4096


def batch(first: int, count: int) -> list[Event]:
    return [Event(event_id=f"e{n:07d}", device_id=f"bin-{n % 500:03d}", kind="bin", event_time_ms=T0 + n,
                  ingest_time_ms=T0 + n, attributes={"fill_pct": float(n % 100)})
            for n in range(first, first + count)]


@pytest.fixture
def started(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqliteStore]:
    # A small WAL bound and a quick checkpointer, so that a test writes past the bound many times.
    monkeypatch.setattr(sqlite_store, "WAL_RESTART_PAGES", 100)
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_INTERVAL_S", 0.005)
    store = SqliteStore.in_directory(tmp_path)
    store.start()
    yield store
    store.close()


def wal_bytes(store: SqliteStore) -> int:
    wal = store.path.with_name(store.path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_committed_pages_reach_the_database_file_while_the_writer_stays_open(started: SqliteStore) -> None:
    size_before = started.path.stat().st_size
    started.write_events(batch(0, 2000))
    started.flush()
    # Below SQLite's own automatic threshold, only the store's checkpointer copies them.
    wait_for(lambda: started.path.stat().st_size > size_before + 50 * PAGE, 10,
             message="the events copied into the database file")


def test_the_wal_starts_over_instead_of_growing_while_batches_keep_coming(started: SqliteStore) -> None:
    written = 0
    largest_wal = 0
    for _ in range(300):
        started.write_events(batch(written, 50))
        started.flush()
        written += 50
        largest_wal = max(largest_wal, wal_bytes(started))
        time.sleep(0.002)  # the processor judges the next batch between two commits
    # Without starting over, the WAL would hold every page of the 300 commits (well over 10 MB here).
    assert largest_wal < 40 * sqlite_store.WAL_RESTART_PAGES * PAGE
    page = started.query_events(EventQuery(limit=1))
    assert page.items and page.items[0].event_id == f"e{written - 1:07d}"

