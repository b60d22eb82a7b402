"""Keys, scopes, masking, rate limits and the audit log on every endpoint (TestClient; keys and audit log
in a real SQLite file and in a real PostgreSQL, each test on both)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from api.access.keys import Scope, hash_token, open_access_db
from core.models import DeadLetter
from core.settings import ApiSettings, AuthMode, RelationalKind, RelationalSettings
from tests.support.alerts import AlertApi, alert_api, bearer, violation
from tests.support.events import T0_MS, reading

OPEN_PATHS = {"/healthz", "/readyz", "/version"}
# Each protected endpoint with the scope that opens it (a path parameter filled with a real value).
SCOPED = [
    ("GET", "/v1/violations", Scope.VIOLATIONS_READ),
    ("GET", "/v1/violations/v0001", Scope.VIOLATIONS_READ),
    ("GET", "/v1/violations/v0001/history", Scope.VIOLATIONS_READ),
    ("GET", "/v1/events", Scope.READINGS_READ),
    ("GET", "/v1/dead-letters", Scope.ADMIN),
    ("GET", "/v1/dead-letters/summary", Scope.ADMIN),
    ("GET", "/metrics", Scope.METRICS_READ),
    ("GET", "/v1/subscriptions", Scope.SUBSCRIPTIONS_MANAGE),
    ("GET", "/v1/admin/keys", Scope.ADMIN),
    ("GET", "/v1/admin/audit", Scope.ADMIN),
    ("GET", "/v1/bins/predictions", Scope.READINGS_READ),
    ("GET", "/v1/dispatch/plans", Scope.READINGS_READ),
    ("GET", "/v1/aggregates/violations?bucket=hour&from=2025-11-26T00:00:00Z&to=2025-11-27T00:00:00Z",
     Scope.VIOLATIONS_READ),
    ("GET", "/v1/aggregates/violations/top?by=device&from=2025-11-26T00:00:00Z&to=2025-11-27T00:00:00Z",
     Scope.VIOLATIONS_READ),
    ("GET", "/v1/readings/latest?kind=bin", Scope.READINGS_READ),
    ("GET", "/v1/exports/violations.csv", Scope.VIOLATIONS_READ),
    ("GET", "/v1/exports/violations.geojson", Scope.VIOLATIONS_READ),
    ("GET", "/v1/status", Scope.METRICS_READ),
    # This app has no device registry: past the scope check the devices API answers 503.
    ("GET", "/v1/devices", Scope.DEVICES_MANAGE),
    ("GET", "/v1/indices", Scope.INDICES_READ),
    ("GET", "/v1/indices/traffic/month/2025-11?level=intersection", Scope.INDICES_READ),
    ("GET", "/v1/rankings/traffic/month/2025-11", Scope.INDICES_READ),
    ("GET", "/v1/reports", Scope.INDICES_READ),
]


@pytest.fixture
def api(tmp_path: Path, relational: RelationalSettings) -> Iterator[AlertApi]:
    api = alert_api(tmp_path, relational=relational)
    api.store.write_violations([violation(1), violation(2, plate=None)])
    api.store.write_events([reading("bin-1", 0, fill_pct=10)])
    api.store.write_dead_letters([DeadLetter(reason="malformed_json", detail="cut", topic="t",
                                             payload=b"{", received_time_ms=T0_MS)])
    api.store.flush()
    yield api
    api.close()


def test_every_endpoint_but_health_needs_a_key(api: AlertApi, client: TestClient) -> None:
    checked = 0
    for route in iter_route_contexts(api.app.routes):  # the routes as included, with their prefixes
        if not isinstance(route.original_route, APIRoute) or route.path in OPEN_PATHS:
            continue
        checked += 1
        path = route.path.replace("{violation_id}", "v0001").replace("{subscription_id}", "x") \
            .replace("{delivery_id}", "1").replace("{key_id}", "x").replace("{format}", "json") \
            .replace("{service_code}", "x").replace("{service_request_id}", "x").replace("{case_id}", "x") \
            .replace("{plan_id}", "x").replace("{stop_id}", "x")
        for method in route.methods:
            response = client.request(method, path)
            if path.startswith("/open311/"):
                # GeoReport v2 answers a missing api_key with its own 403 and error array (docs/cases.md).
                assert response.status_code == 403, (method, path, response.text)
                assert response.json()[0]["code"] == 403
                continue
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
    assert checked > 25
    for path in OPEN_PATHS:
        assert client.get(path).status_code == 200


@pytest.mark.parametrize(("method", "path", "scope"), SCOPED)
def test_each_endpoint_opens_with_its_scope_only(api: AlertApi, client: TestClient, method: str, path: str,
                                                  scope: Scope) -> None:
    others = [s for s in Scope if s not in (scope, Scope.ADMIN)]
    wrong = client.request(method, path, headers=bearer(api.key(*others)))
    assert wrong.status_code == 403
    assert wrong.json()["detail"] == f"this API key lacks the scope {scope.value}"
    allowed = 503 if path == "/v1/devices" else 200
    assert client.request(method, path, headers=bearer(api.key(scope))).status_code == allowed
    assert client.request(method, path, headers=bearer(api.key(Scope.ADMIN))).status_code == allowed


def test_plates_are_masked_without_the_scope_and_every_unmasked_read_is_audited(api, client) -> None:
    reader = bearer(api.key(Scope.VIOLATIONS_READ))
    items = client.get("/v1/violations", headers=reader).json()["items"]
    by_id = {item["violation_id"]: item["evidence"] for item in items}
    assert by_id["v0001"]["plate"] == "粤B1****" and by_id["v0001"]["snapshot_url"] is None
    single = client.get("/v1/violations/v0001", headers={"X-API-Key": reader["Authorization"][7:]}).json()
    assert single["evidence"]["plate"] == "粤B1****"

    plates = api.key(Scope.VIOLATIONS_READ, Scope.PLATES)
    items = client.get("/v1/violations", headers=bearer(plates)).json()["items"]
    assert {i["violation_id"]: i["evidence"]["plate"] for i in items} == {"v0001": "粤B12345", "v0002": None}
    assert client.get("/v1/violations/v0001", headers=bearer(plates)).json()["evidence"]["snapshot_url"]

    audit = client.get("/v1/admin/audit", headers=bearer(api.key(Scope.ADMIN))).json()
    plates_key_id = plates.split("_")[1]
    assert [(a["key_id"], a["action"]) for a in audit] == [
        (plates_key_id, "GET /v1/violations/v0001"), (plates_key_id, "GET /v1/violations")]
    assert "v0001" in audit[1]["what"] and "v0002" not in audit[1]["what"]  # only what was disclosed
    only_reader = client.get("/v1/admin/audit", params={"key_id": reader["Authorization"].split("_")[1]},
                             headers=bearer(api.key(Scope.ADMIN))).json()
    assert only_reader == []  # masked reads disclose nothing


def test_exports_mask_plates_without_the_scope_and_audit_unmasked_ones(api, client) -> None:
    reader = bearer(api.key(Scope.VIOLATIONS_READ))
    csv_masked = client.get("/v1/exports/violations.csv", headers=reader).text
    assert "粤B1****" in csv_masked and "粤B12345" not in csv_masked and "https://" not in csv_masked
    features = client.get("/v1/exports/violations.geojson", headers=reader).json()["features"]
    assert {(f["properties"]["plate"], f["properties"]["snapshot_url"]) for f in features} == {
        ("粤B1****", None), (None, None)}

    plates = api.key(Scope.VIOLATIONS_READ, Scope.PLATES)
    assert "粤B12345" in client.get("/v1/exports/violations.csv", headers=bearer(plates)).text
    audit = client.get("/v1/admin/audit", headers=bearer(api.key(Scope.ADMIN))).json()
    assert [(a["action"], a["what"]) for a in audit] == [
        ("GET /v1/exports/violations.csv", "plates/evidence of violations v0001")]


def test_keys_are_created_shown_once_and_revoked_through_the_api(api, client) -> None:
    admin = bearer(api.key(Scope.ADMIN))
    created = client.post("/v1/admin/keys", json={"name": "dispatch", "scopes": ["violations:read"]},
                          headers=admin).json()
    token = created["token"]
    assert token.startswith(f"cw_{created['key_id']}_")
    listed = client.get("/v1/admin/keys", headers=admin).json()
    assert all("token" not in key for key in listed)
    assert client.get("/v1/violations", headers=bearer(token)).status_code == 200
    assert client.delete(f"/v1/admin/keys/{created['key_id']}", headers=admin).status_code == 204
    response = client.get("/v1/violations", headers=bearer(token))
    assert response.status_code == 401 and response.json()["detail"] == "the API key is unknown or revoked"
    assert client.get("/v1/violations", headers=bearer("cw_nope_nope")).status_code == 401
    bad = client.post("/v1/admin/keys", json={"name": "x", "scopes": ["root"]}, headers=admin)
    assert bad.status_code == 422 and [e["field"] for e in bad.json()["errors"]] == ["scopes.0"]


def test_the_token_is_stored_only_as_its_hash(api, tmp_path, relational) -> None:
    token = api.key(Scope.ADMIN)
    database = open_access_db(tmp_path, relational)
    try:
        stored = repr(database.execute("SELECT * FROM api_keys").rows)
    finally:
        database.close()
    assert hash_token(token) in stored
    assert token not in stored and token.split("_", 2)[2] not in stored
    if relational.kind is RelationalKind.SQLITE:
        raw = (tmp_path / "access.sqlite3").read_bytes()
        assert token.encode() not in raw and token.split("_", 2)[2].encode() not in raw


def test_a_key_over_its_rate_gets_429_with_retry_after(tmp_path) -> None:
    settings = ApiSettings(auth=AuthMode.REQUIRED, rate_limit_per_s=0.5, rate_limit_burst=3)
    api = alert_api(tmp_path, api=settings)
    try:
        client = api.client()
        key, other = bearer(api.key(Scope.VIOLATIONS_READ)), bearer(api.key(Scope.VIOLATIONS_READ))
        assert [client.get("/v1/violations", headers=key).status_code for _ in range(3)] == [200] * 3
        limited = client.get("/v1/violations", headers=key)
        assert limited.status_code == 429
        # One token takes 2 s at 0.5/s; less when the four requests themselves took a while (a busy machine).
        assert limited.headers["retry-after"] in ("1", "2")
        assert limited.json()["type"] == "urn:citywatch:problem:rate-limited"
        assert limited.json()["detail"].startswith("rate limit of 0.5 requests/s (burst 3) exceeded for key ")
        assert client.get("/v1/violations", headers=other).status_code == 200  # limits are per key
        assert client.get("/healthz").status_code == 200
    finally:
        api.close()


def test_auth_disabled_is_refused_off_loopback() -> None:
    with pytest.raises(ValueError, match="only allowed when the API listens on a loopback"):
        ApiSettings(auth=AuthMode.DISABLED, host="0.0.0.0")
    assert ApiSettings(auth=AuthMode.DISABLED, host="::1").auth is AuthMode.DISABLED
    assert ApiSettings().auth is AuthMode.REQUIRED
