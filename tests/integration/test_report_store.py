"""The report store on SQLite and PostgreSQL: a report is stored once per period however many replicas
publish it, read back as stored, listed newest period first; a newer schema is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.settings import RelationalSettings
from store.relational import NewerSchema
from store.reports import ReportStore

pytestmark = pytest.mark.integration


def report(kind: str, key: str, first_day: str, published_ms: int, note: str) -> dict[str, Any]:
    return {"report_id": f"{kind}-{key}", "period": {"kind": kind, "key": key, "first_day": first_day},
            "published_ms": published_ms, "method_version": "citywatch-indices-1+abc", "note": note,
            "indices": {"traffic": {"title": "交通文明指数"}}}


def test_a_period_is_stored_once_whoever_publishes_it(relational: RelationalSettings, tmp_path: Path) -> None:
    first, second = ReportStore.open(relational, tmp_path), ReportStore.open(relational, tmp_path)
    try:
        assert first.publish(report("month", "2026-11", "2026-11-01", 1, "replica a")) is True
        assert second.publish(report("month", "2026-11", "2026-11-01", 2, "replica b")) is False
        assert second.get("month-2026-11") == report("month", "2026-11", "2026-11-01", 1, "replica a")
        assert first.publish(report("month", "2026-10", "2026-10-01", 3, "a")) is True
        assert first.publish(report("quarter", "2026-Q4", "2026-10-01", 4, "a")) is True
        assert [r.report_id for r in second.list()] == ["month-2026-11", "month-2026-10", "quarter-2026-Q4"]
        assert [r.report_id for r in second.list("quarter")] == ["quarter-2026-Q4"]
        assert second.get("month-2020-01") is None and not second.exists("month-2020-01")
    finally:
        first.close()
        second.close()


def test_a_newer_schema_is_refused(relational: RelationalSettings, tmp_path: Path) -> None:
    store = ReportStore.open(relational, tmp_path)
    store._db.execute("UPDATE report_schema SET version = 99")
    store.close()
    with pytest.raises(NewerSchema, match="schema version 99; this citywatch understands up to 1"):
        ReportStore.open(relational, tmp_path)
