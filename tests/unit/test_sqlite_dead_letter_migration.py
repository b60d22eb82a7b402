"""A version-2 SQLite file (dead letters appended, no id) opens as version 3: every dead letter gets its
deterministic id, copies a replay had already stored are merged, and later writes are upserts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from core.models import DeadLetter
from store.base import DeadLetterQuery
from store.sqlite_store import (
    _MIGRATION_V2,
    _ROLLUPS,
    _SCHEMA,
    FILE_NAME,
    SCHEMA_VERSION,
    SqliteStore,
    _statements,
)

T0 = 1_767_225_600_000


def version_2_file(path: Path, rows: list[DeadLetter]) -> None:
    conn = sqlite3.connect(path / FILE_NAME)
    for statement in [*_statements(_SCHEMA), *_statements(_MIGRATION_V2)]:
        conn.execute(statement)
    for rollup in _ROLLUPS:
        for statement in rollup.schema():
            conn.execute(statement)
    conn.execute("PRAGMA user_version=2")
    conn.executemany(
        "INSERT INTO dead_letters (reason, detail, topic, payload, received_time_ms, source) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(d.reason, d.detail, d.topic, d.payload, d.received_time_ms, d.source) for d in rows],
    )
    conn.commit()
    conn.close()


def test_a_version_2_file_gains_dead_letter_ids_and_loses_replayed_copies(tmp_path: Path) -> None:
    bad_json = DeadLetter(reason="malformed_json", detail="payload is not JSON", topic="citywatch/events/a",
                          payload=b"{", received_time_ms=T0)
    unknown = DeadLetter(reason="unknown_device", detail="device_id x is not registered",
                         topic="citywatch/events/x", payload=b'{"device_id": "x"}', received_time_ms=T0 + 1)
    version_2_file(tmp_path, [bad_json, unknown, bad_json])  # bad_json stored twice by a replay

    store = SqliteStore.in_directory(tmp_path)
    try:
        assert store.query_dead_letters(DeadLetterQuery()).items == [unknown, bad_json]
        store.write_dead_letters([unknown, bad_json])
        store.flush()
        assert store.count_dead_letters_by_reason() == {"malformed_json": 1, "unknown_device": 1}
    finally:
        store.close()

    conn = sqlite3.connect(tmp_path / FILE_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    reopened = SqliteStore.in_directory(tmp_path)  # a migrated file opens as it is
    assert len(reopened.query_dead_letters(DeadLetterQuery()).items) == 2
    reopened.close()
