"""The audit log: every read that disclosed a licence plate or an evidence link, by key and time."""

from __future__ import annotations

import time
from dataclasses import dataclass

from store.relational import Database


@dataclass(frozen=True)
class AuditRecord:
    id: int
    time_ms: int
    key_id: str
    action: str
    what: str


class AuditLog:
    """In the keys' database (api/access/keys.py `open_access_db`)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def record(self, key_id: str, action: str, what: str) -> None:
        self._db.execute("INSERT INTO audit_log (time_ms, key_id, action, what) VALUES (?,?,?,?)",
                         (time.time_ns() // 1_000_000, key_id, action, what))

    def query(self, *, key_id: str | None = None, before_id: int | None = None,
              limit: int = 100) -> list[AuditRecord]:
        """Newest first; page with `before_id` = the last id of the previous page."""
        clauses: list[str] = []
        params: list[object] = []
        if key_id is not None:
            clauses.append("key_id = ?")
            params.append(key_id)
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT id, time_ms, key_id, action, what FROM audit_log {where} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        ).rows
        return [AuditRecord(*row) for row in rows]
