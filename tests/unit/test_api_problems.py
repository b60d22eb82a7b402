"""The error contract: every operation documents its error statuses with the problem schema, real errors
match what is documented, the last admin key cannot be revoked, and /docs works offline."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from api.access.keys import Scope
from api.app import create_app
from api.services import ApiServices
from api.status_app import RoleServices, create_status_app
from core.metrics import Metrics
from core.settings import ApiSettings, AuthMode
from store.sqlite_store import SqliteStore
from tests.support.alerts import AlertApi, alert_api, bearer, violation

PROBLEM = "#/components/schemas/Problem"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[AlertApi]:
    api = alert_api(tmp_path)
    api.store.write_violations([violation(1)])
    api.store.flush()
    yield api
    api.close()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def problem_ref(response: dict[str, Any]) -> str | None:
    schema = response.get("content", {}).get("application/problem+json", {}).get("schema", {})
    ref: str | None = schema.get("$ref")
    return ref


def test_every_operation_documents_its_errors_as_problems(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert {"Problem", "FieldProblem"} <= set(document["components"]["schemas"])
    assert "HTTPValidationError" not in document["components"]["schemas"]
    checked = 0
    for path, method, operation in operations(document):
        responses = operation["responses"]
        if "security" in operation:
            for status in ("401", "403", "429"):
                assert problem_ref(responses.get(status, {})) == PROBLEM, (method, path, status)
            assert "Retry-After" in responses["429"]["headers"]
        if path.startswith("/v1/"):
            assert problem_ref(responses.get("422", {})) == PROBLEM, (method, path)
        for status, response in responses.items():
            if path.startswith("/open311/"):  # GeoReport v2's own error array (docs/cases.md)
                # FastAPI declares a 422 for any parameter; these routes take every value as text.
                if status.startswith(("4", "5")) and status != "422":
                    errors = response["content"]["application/json"]["schema"]["items"]
                    assert errors == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, status)
            elif status.startswith(("4", "5")) and not (path == "/readyz" and status == "503"):
                assert problem_ref(response) == PROBLEM, (method, path, status)
        checked += 1
    assert checked > 25
    assert "security" not in document["paths"]["/healthz"]["get"]
    violations = document["paths"]["/v1/violations"]["get"]["responses"]
    assert problem_ref(violations["503"]) == PROBLEM and "Retry-After" in violations["503"]["headers"]
    assert problem_ref(document["paths"]["/v1/subscriptions"]["post"]["responses"]["503"]) == PROBLEM
    revoke = document["paths"]["/v1/admin/keys/{key_id}"]["delete"]["responses"]
    assert {"404", "409"} <= set(revoke)


def assert_documented(client: TestClient, response: Any, path: str, method: str = "get") -> dict[str, Any]:
    """The body of `response` validates against the schema its operation declares for its status."""
    document = client.get("/openapi.json").json()
    declared = document["paths"][path][method]["responses"][str(response.status_code)]
    media_type = response.headers["content-type"]
    assert media_type == "application/problem+json"
    schema = {**declared["content"][media_type]["schema"], "components": document["components"]}
    body: dict[str, Any] = response.json()
    Draft202012Validator(schema).validate(body)
    assert body["status"] == response.status_code
    return body


def test_real_errors_match_their_declared_schema(api: AlertApi, client: TestClient) -> None:
    reader = bearer(api.key(Scope.VIOLATIONS_READ))
    admin = bearer(api.key(Scope.ADMIN))

    missing = assert_documented(client, client.get("/v1/violations"), "/v1/violations")
    assert missing["type"] == "urn:citywatch:problem:unauthorized"
    unknown = assert_documented(client, client.get("/v1/violations", headers=bearer("cw_x_y")),
                                "/v1/violations")
    assert unknown["detail"] == "the API key is unknown or revoked"
    forbidden = assert_documented(client, client.get("/v1/dead-letters", headers=reader), "/v1/dead-letters")
    assert forbidden == {"type": "urn:citywatch:problem:forbidden", "title": "Scope missing", "status": 403,
                         "detail": "this API key lacks the scope admin"}
    not_found = assert_documented(client, client.get("/v1/violations/nope", headers=reader),
                                  "/v1/violations/{violation_id}")
    assert not_found["type"] == "urn:citywatch:problem:not-found"

    too_many = assert_documented(client, client.get("/v1/violations", params={"limit": 5000}, headers=reader),
                                 "/v1/violations")
    assert too_many["errors"] == [{"location": "query", "field": "limit", "message": "must be at most 1000"}]
    bad_body = client.post("/v1/admin/keys", json={"name": "x", "scope": ["admin"]}, headers=admin)
    body = assert_documented(client, bad_body, "/v1/admin/keys", "post")
    assert {(e["location"], e["field"], e.get("closest")) for e in body["errors"]} == {
        ("body", "scope", "scopes"), ("body", "scopes", None)}
    json_type = {"content-type": "application/json"}
    not_json = client.post("/v1/admin/keys", content='{"name": ', headers={**admin, **json_type})
    body = assert_documented(client, not_json, "/v1/admin/keys", "post")
    assert body["errors"] == [
        {"location": "body", "field": "body", "message": "not valid JSON (at character 9)"}]
    assert body["detail"] == "body: not valid JSON (at character 9)"
    bad_scope = client.post("/v1/admin/keys", json={"name": "x", "scopes": ["violation:read"]}, headers=admin)
    [error] = assert_documented(client, bad_scope, "/v1/admin/keys", "post")["errors"]
    assert (error["field"], error["closest"]) == ("scopes.0", "violations:read")
    bucket = client.get("/v1/aggregates/violations", headers=reader, params={
        "bucket": "hours", "from": "2025-11-26T00:00:00Z", "to": "2025-11-27T00:00:00Z"})
    [error] = assert_documented(client, bucket, "/v1/aggregates/violations")["errors"]
    assert (error["field"], error["closest"]) == ("bucket", "hour")


def test_a_rate_limited_key_gets_a_documented_429(tmp_path: Path) -> None:
    api = alert_api(tmp_path, api=ApiSettings(auth=AuthMode.REQUIRED, rate_limit_per_s=0.5,
                                              rate_limit_burst=1))
    try:
        client = api.client()
        key = bearer(api.key(Scope.READINGS_READ))
        assert client.get("/v1/events", headers=key).status_code == 200
        limited = client.get("/v1/events", headers=key)
        body = assert_documented(client, limited, "/v1/events")
        assert body["type"] == "urn:citywatch:problem:rate-limited" and limited.headers["retry-after"] == "2"
    finally:
        api.close()


def test_errors_outside_any_route_are_problems_too(client: TestClient) -> None:
    for response, status in ((client.get("/v1/nowhere"), 404), (client.put("/healthz"), 405)):
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == status and response.json()["type"].startswith(
            "urn:citywatch:problem:")


def test_the_last_admin_key_cannot_be_revoked(api: AlertApi, client: TestClient) -> None:
    first = api.key(Scope.ADMIN)
    first_id = first.split("_")[1]
    api.key(Scope.VIOLATIONS_READ)  # other keys do not count
    refused = client.delete(f"/v1/admin/keys/{first_id}", headers=bearer(first))
    body = assert_documented(client, refused, "/v1/admin/keys/{key_id}", "delete")
    assert body["type"] == "urn:citywatch:problem:last-admin-key"
    assert body["detail"] == (f"key {first_id} is the last active admin key; create another admin key "
                              "before revoking it")
    assert client.get("/v1/admin/keys", headers=bearer(first)).status_code == 200  # still works

    second = client.post("/v1/admin/keys", json={"name": "ops", "scopes": ["admin"]},
                         headers=bearer(first)).json()
    assert client.delete(f"/v1/admin/keys/{first_id}", headers=bearer(first)).status_code == 204
    again = client.delete(f"/v1/admin/keys/{second['key_id']}", headers=bearer(second["token"]))
    assert again.status_code == 409
    gone = client.delete("/v1/admin/keys/nope", headers=bearer(second["token"]))
    assert assert_documented(client, gone, "/v1/admin/keys/{key_id}", "delete")["detail"] == (
        "no active key 'nope'")


def assert_docs_offline(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
    assert urls and not re.search(r"https?://", page.text), urls
    kinds = {}
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        kinds[url.rsplit(".", 1)[-1]] = response.headers["content-type"]
    assert kinds["js"].startswith(("text/javascript", "application/javascript"))
    assert kinds["css"].startswith("text/css")
    assert kinds["json"].startswith("application/json")  # the OpenAPI document itself
    assert client.get("/redoc").status_code == 404  # ReDoc would need a CDN


def test_the_docs_page_loads_only_local_assets(client: TestClient) -> None:
    assert_docs_offline(client)


def test_a_headless_role_serves_its_docs_offline_too() -> None:
    app = create_status_app(RoleServices(metrics=Metrics(), readiness=list, status=dict), "citywatch ingest")
    with TestClient(app) as client:
        assert_docs_offline(client)


def test_an_unexpected_failure_answers_500_as_a_problem(tmp_path: Path) -> None:
    store = SqliteStore.in_directory(tmp_path)
    store.close()  # every query now fails inside sqlite3: what a bug looks like from the outside
    app = create_app(ApiServices(store=store, metrics=Metrics()))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/v1/violations")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {"type": "urn:citywatch:problem:internal", "title": "Internal error",
                               "status": 500, "detail": "an internal error occurred; it is logged"}
