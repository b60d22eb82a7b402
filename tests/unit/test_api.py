"""The HTTP API over a real SQLite store: filters, paging, errors a client would hit, readiness."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.services import ApiServices, ComponentStatus
from core.metrics import Metrics
from core.models import DeadLetter, Evidence, Severity, Violation, ViolationStatus
from store.sqlite_store import SqliteStore
from tests.support.events import T0_MS, reading


def violation(n: int, *, device: str = "bin-1", type: str = "bin_overflow",
              status: ViolationStatus = ViolationStatus.OPEN) -> Violation:
    return Violation(violation_id=f"v{n:03d}", type=type, severity=Severity.MEDIUM, device_id=device,
                     start_time_ms=T0_MS + n * 1000, updated_time_ms=T0_MS + n * 1000, status=status,
                     evidence=Evidence(event_ids=[f"e{n}"]))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore.in_directory(tmp_path)
    yield store
    store.close()


@pytest.fixture
def components() -> list[ComponentStatus]:
    return [ComponentStatus("mqtt", True), ComponentStatus("processor", True)]


@pytest.fixture
def client(store: SqliteStore, components: list[ComponentStatus]) -> Iterator[TestClient]:
    services = ApiServices(store=store, metrics=Metrics(), readiness=lambda: components)
    with TestClient(create_app(services)) as client:
        yield client


def test_violations_come_newest_first_and_page_without_gaps_or_repeats(client, store) -> None:
    store.write_violations([violation(n) for n in range(25)])
    store.flush()
    seen, cursor = [], None
    while True:
        params = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/violations", params=params).json()
        seen += [item["violation_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"v{n:03d}" for n in reversed(range(25))]


def test_violation_filters(client, store) -> None:
    store.write_violations([violation(1), violation(2, device="bin-2"), violation(3, type="other"),
                            violation(4, status=ViolationStatus.CLEARED)])
    store.flush()

    def ids(**params) -> list[str]:
        return [item["violation_id"] for item in client.get("/v1/violations", params=params).json()["items"]]

    assert ids(device="bin-2") == ["v002"]
    assert ids(type="other") == ["v003"]
    assert ids(type=["other", "bin_overflow"], device="bin-1", status="open") == ["v003", "v001"]
    assert ids(status="cleared") == ["v004"]
    t2 = "2025-11-26T05:00:02Z"  # T0 + 2 s
    assert ids(**{"from": t2}) == ["v004", "v003", "v002"]
    assert ids(**{"to": t2}) == ["v001"]
    assert ids(**{"from": "2025-11-26T13:00:02+08:00", "to": "2025-11-26T05:00:03Z"}) == ["v002"]


def test_one_violation_and_404(client, store) -> None:
    store.write_violations([violation(7)])
    store.flush()
    assert client.get("/v1/violations/v007").json()["evidence"]["event_ids"] == ["e7"]
    response = client.get("/v1/violations/nope")
    assert response.status_code == 404 and response.json()["detail"] == "no violation 'nope'"
    assert response.json()["type"] == "urn:citywatch:problem:not-found"


@pytest.mark.parametrize(("params", "field", "message"), [
    ({"limit": 0}, "limit", None),
    ({"limit": 1001}, "limit", "must be at most 1000"),
    ({"status": "closed"}, "status", None),
    ({"from": "2026-11-26T08:00:00"}, "from", None),
    ({"from": "2026-11-26T08:00:00Z", "to": "2026-11-26T07:00:00Z"}, "from", "must be earlier than `to`"),
    ({"cursor": "garbage"}, "cursor", "not a `next_cursor` this API returned for this query"),
    ({"cursor": ""}, "cursor", None),
])
def test_bad_parameters_get_a_422_naming_the_field(client, params, field, message) -> None:
    response = client.get("/v1/violations", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "urn:citywatch:problem:invalid-input" and body["status"] == 422
    [error] = body["errors"]
    assert (error["location"], error["field"]) == ("query", field)
    if message is not None:
        assert error["message"] == message and message in body["detail"]


def test_events_and_dead_letters_are_listed(client, store) -> None:
    store.write_events([reading("bin-1", 0, fill_pct=10), reading("bin-2", 1, fill_pct=20)])
    store.write_dead_letters([DeadLetter(reason="malformed_json", detail="payload: cut off", topic="t",
                                         payload=b'{"a":', received_time_ms=T0_MS)])
    store.flush()
    events = client.get("/v1/events", params={"device": "bin-2"}).json()["items"]
    assert [e["attributes"]["fill_pct"] for e in events] == [20]
    [letter] = client.get("/v1/dead-letters").json()["items"]
    assert letter["payload"] == '{"a":' and letter["reason"] == "malformed_json"
    assert client.get("/v1/dead-letters/summary").json() == {"by_reason": {"malformed_json": 1}}


def test_readiness_reports_the_component_that_is_down(client, components) -> None:
    assert client.get("/readyz").status_code == 200
    components[0] = ComponentStatus("mqtt", False, "not authorised")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert {"name": "mqtt", "ready": False, "detail": "not authorised"} in response.json()["components"]
    assert client.get("/healthz").json() == {"status": "ok"}


def test_openapi_documents_every_endpoint(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/violations", "/v1/violations/{violation_id}", "/v1/events", "/v1/dead-letters",
            "/v1/dead-letters/summary", "/healthz", "/readyz", "/metrics"} <= set(paths)
