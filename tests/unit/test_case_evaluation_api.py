"""GET /v1/cases/evaluation(.csv): the figures of cases kept in the case store (SQLite and PostgreSQL)
equal the figures counted case by case from the definitions (docs/cases.md, "Evaluation")."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from api.access.keys import Scope
from core.case_settings import CasePriority, Verification
from core.settings import RelationalSettings
from processors.cases.evaluation import CaseRecord
from processors.cases.model import Case, CaseOrigin, CaseState
from store.cases import CaseStore
from tests.support.alerts import AlertApi, alert_api, bearer
from tests.unit.test_case_evaluation import DAY_MS, HOUR_MS, WEEK, WEEK_FROM_MS, WEEK_TO_MS, expected_figures

PERIOD = f"from={quote('2026-12-07T00:00:00+08:00')}&to={quote('2026-12-14T00:00:00+08:00')}"


def stored(record: CaseRecord) -> Case:
    return Case(case_id=record.case_id, type="pothole", state=CaseState(record.state),
                priority=CasePriority.NORMAL, verify=Verification.PERSON, origin=CaseOrigin.MANUAL,
                created_by="k1", created_time_ms=record.registered_ms, updated_time_ms=record.registered_ms,
                department=record.department, grid=record.grid, district=record.district,
                deadline_ms=record.deadline_ms, closed_time_ms=record.closed_ms, reworked=record.reworked,
                returns=record.returned, suspended_ms=record.suspended_ms)


@pytest.fixture
def api(tmp_path: Path, relational: RelationalSettings) -> Iterator[AlertApi]:
    api = alert_api(tmp_path, relational=relational)
    with api.cases.store.transaction() as tx:
        for record in WEEK:
            tx.insert(stored(record), [])
    yield api
    api.close()


def test_the_weeks_figures_through_the_api_are_those_counted_case_by_case(api: AlertApi) -> None:
    client = api.client()
    response = client.get(f"/v1/cases/evaluation?{PERIOD}", headers=bearer(api.key(Scope.CASES_READ)))
    assert response.status_code == 200, response.text
    expected = expected_figures(WEEK, WEEK_FROM_MS, WEEK_TO_MS)
    assert response.json() == expected
    assert 0 < expected["city"]["on_time"] < expected["city"]["closed"] < expected["city"]["due"]


def test_the_csv_has_a_row_per_group_with_the_same_figures(api: AlertApi) -> None:
    client = api.client()
    response = client.get(f"/v1/cases/evaluation.csv?{PERIOD}", headers=bearer(api.key(Scope.CASES_READ)))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    expected = expected_figures(WEEK, WEEK_FROM_MS, WEEK_TO_MS)
    assert (rows[0]["level"], rows[0]["key"]) == ("city", "city")
    for row in rows:
        figures = expected[row["level"]] if row["level"] == "city" else expected[row["level"]][row["key"]]
        assert int(row["due"]) == figures["due"] and int(row["on_time"]) == figures["on_time"]
        assert int(row["backlog_7d_30d"]) == figures["backlog"]["7d_30d"]
        rate = figures["closure_rate"]
        assert row["closure_rate"] == ("" if rate is None else repr(rate))
    assert len(rows) == 1 + sum(len(expected[level]) for level in ("district", "grid", "department"))


def test_evaluation_needs_cases_read_and_a_period_that_ends_after_it_starts(api: AlertApi) -> None:
    client = api.client()
    response = client.get(f"/v1/cases/evaluation?{PERIOD}", headers=bearer(api.key(Scope.VIOLATIONS_READ)))
    assert response.status_code == 403 and "cases:read" in response.json()["detail"]
    backwards = f"from={quote('2026-12-14T00:00:00+08:00')}&to={quote('2026-12-07T00:00:00+08:00')}"
    response = client.get(f"/v1/cases/evaluation?{backwards}", headers=bearer(api.key(Scope.CASES_READ)))
    assert response.status_code == 422 and "earlier than `to`" in response.json()["detail"]
    response = client.get("/v1/cases/evaluation.csv", headers=bearer(api.key(Scope.CASES_READ)))
    assert response.status_code == 422


def test_changes_after_a_first_evaluation_are_counted_also_from_another_replica(
        api: AlertApi, tmp_path: Path, relational: RelationalSettings) -> None:
    client = api.client()
    headers = bearer(api.key(Scope.CASES_READ))
    assert client.get(f"/v1/cases/evaluation?{PERIOD}", headers=headers).json() == expected_figures(
        WEEK, WEEK_FROM_MS, WEEK_TO_MS)
    # Another replica on the same database closes open cases and registers one in a new department.
    other = CaseStore.open(relational, tmp_path)
    try:
        changed = list(WEEK)
        with other.transaction() as tx:
            for index, record in enumerate(WEEK):
                if record.closed_ms is None and WEEK_FROM_MS <= record.registered_ms < WEEK_TO_MS - DAY_MS:
                    changed[index] = dataclasses.replace(record, closed_ms=record.registered_ms + HOUR_MS,
                                                         state="closed")
                    tx.update(stored(changed[index]), [])
            extra = CaseRecord("c_extra", "bridges", "grid-99", "district-9", WEEK_FROM_MS + DAY_MS,
                               WEEK_FROM_MS + 2 * DAY_MS)
            tx.insert(stored(extra), [])
    finally:
        other.close()
    assert sum(a != b for a, b in zip(WEEK, changed, strict=True)) > 50
    response = client.get(f"/v1/cases/evaluation?{PERIOD}", headers=headers)
    assert response.json() == expected_figures([*changed, extra], WEEK_FROM_MS, WEEK_TO_MS)
    assert response.json()["department"]["bridges"]["registered"] == 1


def test_a_city_without_cases_has_its_city_row_with_nothing_due(tmp_path: Path) -> None:
    api = alert_api(tmp_path)
    try:
        headers = bearer(api.key(Scope.CASES_READ))
        response = api.client().get(f"/v1/cases/evaluation?{PERIOD}", headers=headers)
        assert response.status_code == 200
        body = response.json()
        assert (body["city"]["registered"], body["city"]["closure_rate"], body["grid"]) == (0, None, {})
    finally:
        api.close()
