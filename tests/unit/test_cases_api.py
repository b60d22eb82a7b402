"""/v1/cases: making, listing, reading and moving cases, with citywatch's problems for what is refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.access.keys import Scope
from core.case_settings import CaseSettings
from core.models import ViolationStatus
from core.settings import RelationalSettings
from tests.support.alerts import AlertApi, alert_api, bearer, violation

ROUTES = CaseSettings.model_validate({"routes": [
    {"match": {"types": ["parking"]}, "department": "traffic-police", "category": "0301",
     "priority": "high"}]})
POTHOLE = {"type": "pothole", "description": "a hole in the bike lane", "department": "roads",
           "district": "futian", "location": {"lat": 22.54, "lon": 114.05},
           "photo_url": "https://photos.example/hole.jpg"}


@pytest.fixture
def api(tmp_path: Path, relational: RelationalSettings) -> Iterator[AlertApi]:
    """On SQLite and on PostgreSQL (keys, audit log and cases)."""
    api = alert_api(tmp_path, cases=ROUTES, relational=relational)
    yield api
    api.close()


def key_id(token: str) -> str:
    return token.split("_")[1]


def worker(api: AlertApi) -> dict[str, str]:
    return bearer(api.key(Scope.CASES_READ, Scope.CASES_WRITE))


def move(client: TestClient, headers: dict[str, str], case_id: str, to: str, **fields: str) -> Any:
    return client.post(f"/v1/cases/{case_id}/transitions", json={"to": to, **fields}, headers=headers)


def test_a_case_made_by_hand_is_registered_with_its_maker_in_the_history(api: AlertApi,
                                                                         client: TestClient) -> None:
    token = api.key(Scope.CASES_WRITE, Scope.PLATES)
    response = client.post("/v1/cases", json=POTHOLE, headers=bearer(token))
    assert response.status_code == 201, response.text
    case = response.json()
    assert (case["state"], case["origin"], case["verify"], case["department"], case["created_by"]) == (
        "registered", "manual", "person", "roads", key_id(token))
    assert case["location"] == {"lat": 22.54, "lon": 114.05} and case["photo_url"] == POTHOLE["photo_url"]
    assert case["allowed_transitions"] == ["dispatched", "suspended"]
    assert [(e["actor"], e["from_state"], e["to_state"]) for e in case["history"]] == [
        (key_id(token), None, "registered")]


def test_making_or_moving_a_case_needs_cases_write(api: AlertApi, client: TestClient) -> None:
    reader = bearer(api.key(Scope.CASES_READ))
    response = client.post("/v1/cases", json=POTHOLE, headers=reader)
    assert response.status_code == 403
    assert response.json()["type"] == "urn:citywatch:problem:forbidden"
    assert "cases:write" in response.json()["detail"]
    assert client.get("/v1/cases", headers=bearer(api.key(Scope.VIOLATIONS_READ))).status_code == 403


def test_a_misspelt_body_field_is_refused_with_the_closest_name(api: AlertApi, client: TestClient) -> None:
    body = {**POTHOLE, "descripton": POTHOLE["description"]}
    del body["description"]
    response = client.post("/v1/cases", json=body, headers=worker(api))
    assert response.status_code == 422
    assert "did you mean 'description'?" in response.json()["detail"]


def test_the_loop_by_hand_with_every_step_in_the_history(api: AlertApi, client: TestClient) -> None:
    headers = worker(api)
    case_id = client.post("/v1/cases", json=POTHOLE, headers=headers).json()["case_id"]
    steps: list[tuple[str, dict[str, str]]] = [
        ("dispatched", {"assignee": "li", "note": "urgent: bikes swerve"}), ("accepted", {}),
        ("in_progress", {}), ("reported_done", {"note": "filled", "photo_url": "https://photos.example/ok.jpg"}),
        ("verified", {"note": "checked on site"}), ("closed", {})]
    for to, fields in steps:
        response = move(client, headers, case_id, to, **fields)
        assert response.status_code == 200, response.text
    case = client.get(f"/v1/cases/{case_id}", headers=headers).json()
    assert (case["state"], case["resolution"], case["assignee"]) == ("closed", "verified_by_person", "li")
    assert [e["to_state"] for e in case["history"]] == [
        "registered", "dispatched", "accepted", "in_progress", "reported_done", "verified", "closed"]
    assert case["history"][1]["note"] == "urgent: bikes swerve"
    assert case["history"][1]["assignee"] == "li"
    assert case["closed_time_ms"] is not None


def test_an_illegal_transition_is_a_conflict_naming_the_state_and_the_allowed_ones(
        api: AlertApi, client: TestClient) -> None:
    headers = worker(api)
    case_id = client.post("/v1/cases", json=POTHOLE, headers=headers).json()["case_id"]
    response = move(client, headers, case_id, "closed")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:citywatch:problem:illegal-transition"
    assert problem["detail"] == (f"case {case_id} is registered: it cannot go to closed; allowed from "
                                 "registered: dispatched, suspended")
    assert [e["to_state"] for e in client.get(f"/v1/cases/{case_id}", headers=headers).json()["history"]] == [
        "registered"]


def test_a_transition_missing_what_it_needs_names_the_body_field(api: AlertApi, client: TestClient) -> None:
    headers = worker(api)
    case_id = client.post("/v1/cases", json=POTHOLE, headers=headers).json()["case_id"]
    response = move(client, headers, case_id, "suspended")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "reason"
    assert move(client, headers, case_id, "dispatched", photo_url="file:///x").status_code == 422


def test_a_state_the_api_does_not_know_is_invalid_input(api: AlertApi, client: TestClient) -> None:
    headers = worker(api)
    case_id = client.post("/v1/cases", json=POTHOLE, headers=headers).json()["case_id"]
    response = move(client, headers, case_id, "done")
    assert response.status_code == 422 and response.json()["type"] == "urn:citywatch:problem:invalid-input"


def test_an_unknown_case_is_not_found(api: AlertApi, client: TestClient) -> None:
    headers = worker(api)
    assert client.get("/v1/cases/c_nope", headers=headers).json()["type"] == "urn:citywatch:problem:not-found"
    assert move(client, headers, "c_nope", "dispatched", department="x").status_code == 404


def test_a_wrong_department_returns_the_case_and_it_is_rerouted(api: AlertApi, client: TestClient) -> None:
    api.cases.violation_changes([violation(1)])
    headers = worker(api)
    [case] = client.get("/v1/cases", headers=headers).json()["items"]
    assert (case["department"], case["category"], case["priority"]) == ("traffic-police", "0301", "high")
    assert move(client, headers, case["case_id"], "dispatched").status_code == 200
    returned = move(client, headers, case["case_id"], "returned", reason="private car park: not ours")
    assert returned.json()["state"] == "returned" and returned.json()["returned_by"] == "traffic-police"
    refused = move(client, headers, case["case_id"], "dispatched", department="traffic-police")
    assert refused.status_code == 422 and "traffic-police returned this case" in refused.json()["detail"]
    rerouted = move(client, headers, case["case_id"], "dispatched", department="property-management")
    assert (rerouted.json()["state"], rerouted.json()["department"]) == ("dispatched", "property-management")
    history = rerouted.json()["history"]
    assert [(e["to_state"], e["department"], e["reason"]) for e in history[1:]] == [
        ("dispatched", "traffic-police", None), ("returned", None, "private car park: not ours"),
        ("dispatched", "property-management", None)]


def test_the_list_filters_by_state_department_type_and_district(api: AlertApi, client: TestClient) -> None:
    headers = worker(api)
    pothole = client.post("/v1/cases", json=POTHOLE, headers=headers).json()["case_id"]
    api.cases.violation_changes([violation(1, district="luohu")])

    def ids(query: str) -> list[str]:
        response = client.get(f"/v1/cases?{query}", headers=headers)
        assert response.status_code == 200, response.text
        return [item["type"] for item in response.json()["items"]]

    # Newest first by registration: the parking case is registered at its violation's time, before the
    # pothole was reported, though the change reached the cases after it.
    assert ids("") == ["pothole", "parking"]
    assert ids("department=roads") == ["pothole"]
    assert ids("district=luohu&state=registered") == ["parking"]
    assert ids("type=pothole&type=parking&state=closed") == []
    assert ids("from=2000-01-01T00:00:00Z&to=2001-01-01T00:00:00Z") == []
    move(client, headers, pothole, "dispatched")
    assert ids("state=dispatched") == ["pothole"]


@pytest.mark.parametrize(("query", "field"), [
    ("departmnt=roads", "departmnt"), ("cursor=yesterday", "cursor"), ("state=finished", "state.0")])
def test_the_list_refuses_what_it_does_not_understand(api: AlertApi, client: TestClient, query: str,
                                                      field: str) -> None:
    response = client.get(f"/v1/cases?{query}", headers=worker(api))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field


def test_the_linked_violations_are_shown_masked_without_the_plates_scope(api: AlertApi,
                                                                         client: TestClient) -> None:
    api.store.write_violations([violation(1)])
    api.store.flush()
    api.cases.violation_changes([violation(1), violation(2), violation(1, status=ViolationStatus.CLEARED)])
    headers = worker(api)
    [case] = client.get("/v1/cases", headers=headers).json()["items"]
    detail = client.get(f"/v1/cases/{case['case_id']}", headers=headers).json()
    members = detail["violations"]
    assert [(m["violation_id"], m["cleared_time_ms"] is not None) for m in members] == [
        ("v0001", True), ("v0002", False)]
    assert members[0]["violation"]["evidence"]["plate"] == "粤B1****"
    assert members[0]["violation"]["evidence"]["snapshot_url"] is None
    assert members[1]["violation"] is None  # not in the store
    assert detail["open_violations"] == 1
    plates = bearer(api.key(Scope.CASES_READ, Scope.PLATES))
    shown = client.get(f"/v1/cases/{case['case_id']}", headers=plates)
    evidence = shown.json()["violations"][0]["violation"]["evidence"]
    assert (evidence["plate"], evidence["snapshot_url"]) == ("粤B12345", "https://evidence.example/1.jpg")


def test_photos_are_links_shown_only_with_the_plates_scope_and_audited(api: AlertApi,
                                                                      client: TestClient) -> None:
    headers = worker(api)
    case_id = client.post("/v1/cases", json=POTHOLE, headers=headers).json()["case_id"]
    for to, fields in (("dispatched", {}), ("accepted", {}), ("in_progress", {}),
                       ("reported_done", {"note": "filled", "photo_url": "https://photos.example/ok.jpg"})):
        move(client, headers, case_id, to, **fields)
    masked = client.get(f"/v1/cases/{case_id}", headers=headers).json()
    assert masked["photo_url"] is None
    assert [e["photo_url"] for e in masked["history"]] == [None] * 5
    assert [e["note"] for e in masked["history"]][-1] == "filled"
    token = api.key(Scope.CASES_READ, Scope.PLATES)
    shown = client.get(f"/v1/cases/{case_id}", headers=bearer(token)).json()
    assert shown["photo_url"] == "https://photos.example/ok.jpg"
    assert [e["photo_url"] for e in shown["history"]] == [
        POTHOLE["photo_url"], None, None, None, "https://photos.example/ok.jpg"]
    assert api.access.audit_log is not None
    assert [(r.action, r.what) for r in api.access.audit_log.query(key_id=key_id(token))] == [
        (f"GET /v1/cases/{case_id}", f"plates/evidence of cases {case_id}")]


CLOSING: list[tuple[str, dict[str, str]]] = [
    ("dispatched", {"assignee": "li"}), ("accepted", {}), ("in_progress", {}),
    ("reported_done", {"note": "filled", "photo_url": "https://photos.example/ok.jpg"}), ("verified", {}),
    ("closed", {})]


def test_a_closed_case_is_reopened_by_a_writer_with_a_note_and_counts_as_rework(api: AlertApi,
                                                                                client: TestClient) -> None:
    token = api.key(Scope.CASES_READ, Scope.CASES_WRITE)
    headers = bearer(token)
    case_id = client.post("/v1/cases", json=POTHOLE, headers=headers).json()["case_id"]
    for to, fields in CLOSING:
        assert move(client, headers, case_id, to, **fields).status_code == 200
    assert client.get(f"/v1/cases/{case_id}", headers=headers).json()["allowed_transitions"] == ["reopened"]
    reader = bearer(api.key(Scope.CASES_READ))
    assert move(client, reader, case_id, "reopened", note="the hole is back").status_code == 403
    missing = move(client, headers, case_id, "reopened")
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "note"

    response = move(client, headers, case_id, "reopened", note="the hole is back after the rain")
    assert response.status_code == 200, response.text
    case = response.json()
    assert (case["state"], case["closed_time_ms"], case["resolution"]) == ("reopened", None, None)
    assert case["allowed_transitions"] == ["dispatched", "accepted", "in_progress", "suspended"]
    last = case["history"][-1]
    assert (last["actor"], last["from_state"], last["to_state"], last["note"]) == (
        key_id(token), "closed", "reopened", "the hole is back after the rain")
    # Evaluation: sent back for rework, and no longer closed (due once its deadline has passed).
    now_s = api.cases.now_ms() // 1000
    period = {"from": _rfc3339(now_s - 86_400), "to": _rfc3339(now_s + 30 * 86_400)}
    city = client.get("/v1/cases/evaluation", params=period, headers=headers).json()["city"]
    assert (city["registered"], city["due"], city["closed"], city["reworked"]) == (1, 1, 0, 1)


def test_a_closed_case_stays_closed_while_a_newer_case_is_open_at_its_place(api: AlertApi,
                                                                           client: TestClient) -> None:
    headers = worker(api)
    api.cases.violation_changes([violation(1)])
    [first] = client.get("/v1/cases", headers=headers).json()["items"]
    for to, fields in CLOSING:
        assert move(client, headers, first["case_id"], to, **fields).status_code == 200
    api.cases.violation_changes([violation(2)])  # the same camera again: a new case
    newer = [c for c in client.get("/v1/cases", headers=headers).json()["items"]
             if c["case_id"] != first["case_id"]]
    assert [c["state"] for c in newer] == ["registered"]
    response = move(client, headers, first["case_id"], "reopened", note="parked there again")
    assert response.status_code == 409
    assert response.json()["type"] == "urn:citywatch:problem:illegal-transition"
    assert response.json()["detail"] == (
        f"case {newer[0]['case_id']} is open for parking at cam-1: the problem's recurrence is in that "
        f"case, so {first['case_id']} stays closed")
    assert client.get(f"/v1/cases/{first['case_id']}", headers=headers).json()["state"] == "closed"


def _rfc3339(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


def test_a_case_made_by_hand_links_existing_violations_by_id(api: AlertApi, client: TestClient) -> None:
    api.store.write_violations([violation(1), violation(2, status=ViolationStatus.CLEARED)])
    api.store.flush()
    headers = worker(api)
    body = {**POTHOLE, "type": "parking", "violation_ids": ["v0001", "v0002", "v0001"]}
    response = client.post("/v1/cases", json=body, headers=headers)
    assert response.status_code == 201, response.text
    case = response.json()
    assert [(m["violation_id"], m["cleared_time_ms"] is not None) for m in case["violations"]] == [
        ("v0001", False), ("v0002", True)]
    assert (case["open_violations"], case["verify"], case["origin"]) == (1, "person", "manual")
    # The routed opening arriving now finds v0001 in a case already: no second case. Its clearing reaches
    # the case, which a person still verifies.
    api.cases.violation_changes([violation(1), violation(1, status=ViolationStatus.CLEARED)])
    [only] = client.get("/v1/cases", headers=headers).json()["items"]
    assert (only["case_id"], only["open_violations"], only["state"]) == (case["case_id"], 0, "registered")
    # The case of a violation is found by its id; a violation in no case finds none.
    found = client.get("/v1/cases", params={"violation": "v0002"}, headers=headers).json()["items"]
    assert [c["case_id"] for c in found] == [case["case_id"]]
    api.store.write_violations([violation(3)])
    api.store.flush()
    assert client.get("/v1/cases", params={"violation": "v0003"}, headers=headers).json()["items"] == []


def test_linking_an_unknown_violation_is_refused_naming_it_and_makes_no_case(api: AlertApi,
                                                                            client: TestClient) -> None:
    api.store.write_violations([violation(1)])
    api.store.flush()
    headers = worker(api)
    body = {**POTHOLE, "violation_ids": ["v0001", "v9999"]}
    response = client.post("/v1/cases", json=body, headers=headers)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "urn:citywatch:problem:invalid-input"
    assert problem["errors"][0]["field"] == "violation_ids.1"
    assert problem["errors"][0]["message"] == "no violation 'v9999'"
    assert client.get("/v1/cases", headers=headers).json()["items"] == []


def test_a_violation_of_another_case_cannot_be_linked_again(api: AlertApi, client: TestClient) -> None:
    api.store.write_violations([violation(1)])
    api.store.flush()
    api.cases.violation_changes([violation(1)])  # routed: its own case
    headers = worker(api)
    [routed] = client.get("/v1/cases", headers=headers).json()["items"]
    response = client.post("/v1/cases", json={**POTHOLE, "violation_ids": ["v0001"]}, headers=headers)
    assert response.status_code == 409
    assert response.json()["type"] == "urn:citywatch:problem:conflict"
    assert response.json()["detail"] == f"violation v0001 belongs to case {routed['case_id']} already"
    assert len(client.get("/v1/cases", headers=headers).json()["items"]) == 1
