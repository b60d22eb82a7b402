"""Published index reports (docs/indices.md, "Reports"), frozen, in the relational database
(store/relational.py): `reports.sqlite3` under the data directory, or the PostgreSQL database every api
replica shares.

A report's id names its period (`month-2026-11`), so a report is written once however many replicas
publish it: the first insert wins (`ON CONFLICT DO NOTHING`) and every publisher then reads the stored one.
A stored report is never updated: data arriving later for its period is stated in the next report.
The schema version is kept in `report_schema` (version 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from core.settings import RelationalSettings
from store.relational import Database, Schema, open_migrated, stored_schema_version

FILE_NAME: Final = "reports.sqlite3"
SCHEMA_VERSION: Final = 1

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS index_reports (
    report_id       TEXT PRIMARY KEY,
    period_kind     TEXT NOT NULL,
    period_key      TEXT NOT NULL,
    first_day       TEXT NOT NULL,
    published_ms    {int} NOT NULL,
    method_version  TEXT NOT NULL,
    content         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS index_reports_by_period ON index_reports (period_kind, first_day);
CREATE TABLE IF NOT EXISTS report_schema (
    version         INTEGER NOT NULL
);
"""
SCHEMA: Final = Schema("reports", _TABLES.format(int="INTEGER"), _TABLES.format(int="BIGINT"))


@dataclass(frozen=True)
class ReportSummary:
    report_id: str
    period_kind: str
    period_key: str
    first_day: str
    published_ms: int
    method_version: str

    def as_json(self) -> dict[str, Any]:
        return {"report_id": self.report_id, "period_kind": self.period_kind, "period_key": self.period_key,
                "first_day": self.first_day, "published_ms": self.published_ms,
                "method_version": self.method_version}


class ReportStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    @classmethod
    def open(cls, relational: RelationalSettings, data_dir: Path) -> ReportStore:
        return cls(open_migrated(relational, data_dir, FILE_NAME, SCHEMA, _migrate))

    def publish(self, content: dict[str, Any]) -> bool:
        """Stores the report unless one with its id exists; whether this call stored it."""
        period = content["period"]
        result = self._db.execute(
            "INSERT INTO index_reports (report_id, period_kind, period_key, first_day, published_ms, "
            "method_version, content) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (report_id) DO NOTHING",
            (content["report_id"], period["kind"], period["key"], period["first_day"],
             content["published_ms"], content["method_version"],
             json.dumps(content, ensure_ascii=False, separators=(",", ":"))))
        return result.rowcount == 1

    def get(self, report_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT content FROM index_reports WHERE report_id = ?", (report_id,)).one()
        if row is None:
            return None
        content: dict[str, Any] = json.loads(row[0])
        return content

    def exists(self, report_id: str) -> bool:
        found = self._db.execute("SELECT 1 FROM index_reports WHERE report_id = ?", (report_id,))
        return found.one() is not None

    def list(self, period_kind: str | None = None, limit: int = 100) -> list[ReportSummary]:
        """The newest periods first."""
        where, params = ("WHERE period_kind = ? ", [period_kind]) if period_kind else ("", [])
        rows = self._db.execute(
            "SELECT report_id, period_kind, period_key, first_day, published_ms, method_version "
            f"FROM index_reports {where}ORDER BY first_day DESC, period_kind LIMIT ?", [*params, limit]).rows
        return [ReportSummary(*row) for row in rows]

    def close(self) -> None:
        self._db.close()


def _migrate(database: Database) -> None:
    with database.transaction(exclusive="schema:reports-version") as tx:
        version = stored_schema_version(tx, "report_schema", "report", SCHEMA_VERSION)
        if version is None:
            tx.execute("INSERT INTO report_schema (version) VALUES (?)", (SCHEMA_VERSION,))
