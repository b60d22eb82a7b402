"""Several processes (here: connections) open the same new SQLite file at once: one creates the
schema, the others wait for it and use it; none fails."""

from __future__ import annotations

import threading
from pathlib import Path

from store.sqlite_store import SqliteStore

OPENERS = 4
ROUNDS = 15


def test_stores_opened_together_on_a_new_file_all_start(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        path = tmp_path / f"round-{round_}" / "citywatch.sqlite3"
        barrier = threading.Barrier(OPENERS)
        errors: list[BaseException] = []
        stores: list[SqliteStore] = []

        def open_store(path: Path = path, barrier: threading.Barrier = barrier,
                       errors: list[BaseException] = errors, stores: list[SqliteStore] = stores) -> None:
            barrier.wait()
            try:
                stores.append(SqliteStore(path))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(OPENERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        try:
            assert errors == []
            assert len(stores) == OPENERS
        finally:
            for store in stores:
                store.close()
