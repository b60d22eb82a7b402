"""A version-3 SQLite file opens as version 4: its violations are kept with an unknown detection time, and
their later state changes are kept in the history."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from core.models import Evidence, LifecycleChange, Severity, Violation, ViolationStatus
from store.sqlite_store import (
    _MIGRATION_V2,
    _MIGRATION_V3_COLUMN,
    _MIGRATION_V3_INDEX,
    _ROLLUPS,
    _SCHEMA,
    FILE_NAME,
    SCHEMA_VERSION,
    SqliteStore,
    _statements,
)

T0 = 1_767_225_600_000

OPEN = Violation(violation_id="v-old", type="bin_overflow", severity=Severity.HIGH, device_id="bin-1",
                 start_time_ms=T0, updated_time_ms=T0 + 60_000, evidence=Evidence(event_ids=["e1"]),
                 tags={"district": "futian"})


def version_3_file(path: Path) -> None:
    conn = sqlite3.connect(path / FILE_NAME)
    for statement in [*_statements(_SCHEMA), *_statements(_MIGRATION_V2)]:
        conn.execute(statement)
    for rollup in _ROLLUPS:
        for statement in rollup.schema():
            conn.execute(statement)
    conn.execute(_MIGRATION_V3_COLUMN)
    for statement in _statements(_MIGRATION_V3_INDEX):
        conn.execute(statement)
    conn.execute("PRAGMA user_version=3")
    conn.execute(
        "INSERT INTO violations (violation_id, type, severity, device_id, status, start_time_ms, "
        "updated_time_ms, evidence, tags, district) VALUES (?, ?, ?, ?, 'open', ?, ?, ?, ?, 'futian')",
        (OPEN.violation_id, OPEN.type, OPEN.severity.value, OPEN.device_id, OPEN.start_time_ms,
         OPEN.updated_time_ms, msgspec.json.encode(OPEN.evidence).decode(), '{"district": "futian"}'),
    )
    conn.commit()
    conn.close()


def test_a_version_3_file_keeps_its_violations_and_records_their_later_changes(tmp_path: Path) -> None:
    version_3_file(tmp_path)
    store = SqliteStore.in_directory(tmp_path)
    try:
        assert store.get_violation("v-old") == OPEN  # detection time unknown: None
        assert store.violation_history("v-old") == []
        cleared = msgspec.structs.replace(OPEN, status=ViolationStatus.CLEARED, end_time_ms=T0 + 120_000,
                                          updated_time_ms=T0 + 120_000)
        store.write_violations([cleared])
        store.flush()
        assert store.get_violation("v-old") == cleared
        assert [(e.change, e.time_ms, e.actor) for e in store.violation_history("v-old")] == [
            (LifecycleChange.CLEARED, T0 + 120_000, "rule:bin_overflow")]
    finally:
        store.close()
    conn = sqlite3.connect(tmp_path / FILE_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    conn.close()
