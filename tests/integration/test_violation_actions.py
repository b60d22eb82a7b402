"""People's actions on a violation through the API, on SQLite and on PostgreSQL: acknowledged, assigned,
dismissed as false, annotated; kept with time, key and note, refused when the violation's state does not
allow them, seen by every api replica, and shown with the violation and in its history."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient

from api.access.keys import Scope
from api.violation_actions import Action, ActionRefused, Refusal, ViolationActions
from core.models import Evidence, LifecycleChange, Severity, Violation, ViolationStatus
from core.settings import RelationalKind, RelationalSettings
from processors.rule import Emitter
from tests.support.alerts import AlertApi, alert_api, bearer
from tests.support.events import T0_MS

pytestmark = pytest.mark.integration

PROBLEM = "urn:citywatch:problem:"


def violation(violation_id: str = "v-bin", *, cleared: bool = False) -> list[Violation]:
    """The states a rule emitted: opened at T0+60 s, and cleared at T0+600 s if `cleared`."""
    opened = Violation(violation_id=violation_id, type="bin_overflow", severity=Severity.HIGH,
                       device_id="bin-1", start_time_ms=T0_MS, updated_time_ms=T0_MS + 60_000,
                       evidence=Evidence(event_ids=["e1", "e2"]), tags={"district": "futian"})
    out = Emitter()
    out.violation(opened)
    if cleared:
        out.violation(msgspec.structs.replace(opened, status=ViolationStatus.CLEARED,
                                              end_time_ms=T0_MS + 600_000, updated_time_ms=T0_MS + 600_000))
    return out.violations


class Replica:
    def __init__(self, api: AlertApi) -> None:
        self.api = api
        self.http: TestClient = api.client()

    def act(self, token: str, violation_id: str, **body: Any) -> Any:
        return self.http.post(f"/v1/violations/{violation_id}/actions", json=body, headers=bearer(token))

    def get(self, token: str, path: str) -> Any:
        return self.http.get(path, headers=bearer(token))


@pytest.fixture
def replicas(tmp_path: Path, relational: RelationalSettings) -> Iterator[tuple[Replica, Replica]]:
    """Two api replicas on one relational database (SQLite: one data directory; PostgreSQL: a directory
    each, as on two hosts), each with the violations in its own store."""
    shared = relational.kind is RelationalKind.SQLITE
    dirs = (tmp_path, tmp_path) if shared else (tmp_path / "a", tmp_path / "b")
    apis = [alert_api(d, relational=relational) for d in dirs]
    for api in apis:
        api.store.write_violations([*violation("v-bin"), *violation("v-done", cleared=True)])
        api.store.flush()
    yield Replica(apis[0]), Replica(apis[1])
    for api in apis:
        api.close()


def changes(history: dict[str, Any]) -> list[str]:
    return [entry["change"] for entry in history["entries"]]


def test_an_acknowledgement_on_one_replica_is_shown_and_enforced_by_the_other(replicas) -> None:
    a, b = replicas
    officer = a.api.key(Scope.VIOLATIONS_READ, Scope.VIOLATIONS_WRITE, name="desk-3")
    officer_id = a.api.access.keys.verify(officer).key_id  # type: ignore[union-attr]

    acknowledged = a.act(officer, "v-bin", action="acknowledge")
    assert acknowledged.status_code == 201
    entry = acknowledged.json()
    assert (entry["change"], entry["actor"], entry["actor_name"]) == ("acknowledged", f"key:{officer_id}",
                                                                     "desk-3")

    shown = b.get(officer, "/v1/violations/v-bin").json()
    assert shown["handling"]["acknowledged_by"] == f"key:{officer_id}"
    assert shown["handling"]["acknowledged_time_ms"] == entry["time_ms"]
    assert shown["detected_time_ms"] == T0_MS + 60_000
    listed = {v["violation_id"]: v["handling"] for v in b.get(officer, "/v1/violations").json()["items"]}
    assert listed["v-bin"]["acknowledged_by"] == f"key:{officer_id}"
    assert listed["v-done"] == {"acknowledged_time_ms": None, "acknowledged_by": None, "assignee": None,
                                "assigned_time_ms": None, "dismissed_time_ms": None, "dismissed_by": None,
                                "dismissed_reason": None, "notes": 0}

    again = b.act(officer, "v-bin", action="acknowledge")
    assert again.status_code == 409
    assert again.json()["type"] == PROBLEM + "already-acknowledged"
    assert f"key:{officer_id}" in again.json()["detail"]
    assert changes(b.get(officer, "/v1/violations/v-bin/history").json()) == ["opened", "acknowledged"]


def test_assign_dismiss_and_notes_follow_the_documented_rules(replicas) -> None:
    a, _ = replicas
    token = a.api.key(Scope.VIOLATIONS_READ, Scope.VIOLATIONS_WRITE)

    # A cleared violation can still be acknowledged and assigned for follow-up.
    assert a.act(token, "v-done", action="acknowledge").status_code == 201
    assert a.act(token, "v-done", action="assign", assignee="sanitation-futian").status_code == 201
    same = a.act(token, "v-done", action="assign", assignee="sanitation-futian")
    assert same.status_code == 409 and same.json()["type"] == PROBLEM + "already-assigned"
    assert a.act(token, "v-done", action="assign", assignee="crew-7").status_code == 201  # reassigned
    assert a.act(token, "v-done", action="note", note="crew on site 10:40").status_code == 201
    dismissed = a.act(token, "v-done", action="dismiss", note="sensor fouled by a bag, bin was half full")
    assert dismissed.status_code == 201
    # Dismissed is settled: only notes.
    for body in ({"action": "acknowledge"}, {"action": "assign", "assignee": "crew-8"},
                 {"action": "dismiss", "note": "twice"}):
        refused = a.act(token, "v-done", **body)
        assert refused.status_code == 409, body
        assert refused.json()["type"] == PROBLEM + "violation-dismissed"
    assert a.act(token, "v-done", action="note", note="sensor cleaned").status_code == 201

    handling = a.get(token, "/v1/violations/v-done").json()["handling"]
    assert handling["assignee"] == "crew-7"
    assert handling["dismissed_reason"] == "sensor fouled by a bag, bin was half full"
    assert handling["notes"] == 2
    history = a.get(token, "/v1/violations/v-done/history").json()
    # The rule's changes are at event time (long before), people's actions at wall time, in order.
    assert changes(history) == ["opened", "cleared", "acknowledged", "assigned", "assigned", "noted",
                                "dismissed", "noted"]
    assert [e["assignee"] for e in history["entries"] if e["change"] == "assigned"] == [
        "sanitation-futian", "crew-7"]
    assert [e["time_ms"] for e in history["entries"]][:2] == [T0_MS + 60_000, T0_MS + 600_000]
    assert history["entries"][0]["actor"] == "rule:bin_overflow"


def test_actions_missing_what_they_need_are_invalid_input_naming_the_field(replicas) -> None:
    a, _ = replicas
    token = a.api.key(Scope.VIOLATIONS_WRITE)
    for body, field in (({"action": "assign"}, "assignee"), ({"action": "dismiss"}, "note"),
                        ({"action": "note"}, "note"),
                        ({"action": "acknowledge", "assignee": "x"}, "assignee"),
                        ({"action": "acknowledge", "asignee": "x"}, "asignee"),
                        ({"action": "escalate"}, "action")):
        answer = a.act(token, "v-bin", **body)
        assert answer.status_code == 422, body
        assert answer.json()["type"] == PROBLEM + "invalid-input"
        assert [e["field"] for e in answer.json()["errors"]] == [field], body
    unknown = a.act(token, "no-such-violation", action="acknowledge")
    assert unknown.status_code == 404 and unknown.json()["type"] == PROBLEM + "not-found"
    assert a.get(a.api.key(Scope.VIOLATIONS_READ), "/v1/violations/no-such/history").status_code == 404
    assert changes(a.get(a.api.key(Scope.VIOLATIONS_READ), "/v1/violations/v-bin/history").json()) == [
        "opened"]  # nothing invalid was recorded


def test_acting_needs_violations_write_and_reading_the_history_violations_read(replicas) -> None:
    a, _ = replicas
    reader = a.api.key(Scope.VIOLATIONS_READ)
    refused = a.act(reader, "v-bin", action="acknowledge")
    assert refused.status_code == 403 and "violations:write" in refused.json()["detail"]
    writer = a.api.key(Scope.VIOLATIONS_WRITE)
    assert a.get(writer, "/v1/violations/v-bin/history").status_code == 403
    admin = a.api.key(Scope.ADMIN)
    assert a.act(admin, "v-bin", action="acknowledge").status_code == 201
    assert changes(a.get(admin, "/v1/violations/v-bin/history").json()) == ["opened", "acknowledged"]


def test_concurrent_acknowledgements_record_exactly_one(tmp_path: Path,
                                                        relational: RelationalSettings) -> None:
    """Each replica's own connection, acknowledging the same violation at the same moment."""
    stores = [ViolationActions.open(relational, tmp_path) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    results: list[str] = []

    def acknowledge(actions: ViolationActions, n: int) -> None:
        barrier.wait()
        try:
            actions.record("v-bin", Action.ACKNOWLEDGE, actor=f"key:k{n}")
            results.append("recorded")
        except ActionRefused as exc:
            results.append(exc.reason.value)

    threads = [threading.Thread(target=acknowledge, args=(actions, n)) for n, actions in enumerate(stores)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [Refusal.ALREADY_ACKNOWLEDGED.value] * 3 + ["recorded"]
        assert [e.change for e in stores[0].history("v-bin")] == [LifecycleChange.ACKNOWLEDGED]
    finally:
        for actions in stores:
            actions.close()
