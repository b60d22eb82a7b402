"""Request ids, HTTP metrics and GET /version, on the API and on a headless role's status endpoints."""

from __future__ import annotations

import json
import logging
import platform
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from websockets.sync.client import connect

from api.app import create_app
from api.services import ApiServices
from api.status_app import RoleServices, create_status_app
from core.log_format import (
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    bind_request_id,
    unbind_request_id,
)
from core.metrics import Metrics
from core.models import Evidence, Severity, Violation, ViolationStatus
from core.settings import ApiSettings, AuthMode, ConfigError, load_settings
from store.sqlite_store import SCHEMA_VERSION, SqliteStore
from tests.support.alerts import alert_api, violation
from tests.support.events import T0_MS
from tests.support.servers import ApiServer
from tests.support.wait import wait_for

GENERATED_ID = re.compile(r"[0-9a-f]{32}")
VIOLATION_ROUTE = "/v1/violations/{violation_id}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore.in_directory(tmp_path)
    yield store
    store.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def client(store: SqliteStore, metrics: Metrics) -> Iterator[TestClient]:
    with TestClient(create_app(ApiServices(store=store, metrics=metrics))) as client:
        yield client


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# Request ids


def test_every_answer_carries_a_new_request_id_when_the_client_sent_none(client) -> None:
    first = client.get("/healthz").headers["X-Request-ID"]
    second = client.get("/healthz").headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(first) and GENERATED_ID.fullmatch(second) and first != second


def test_a_sane_incoming_request_id_is_echoed(client) -> None:
    for sent in ("edge-7f3a.01:retry_2", "x", "a" * 128):
        assert client.get("/healthz", headers={"X-Request-ID": sent}).headers["X-Request-ID"] == sent


@pytest.mark.parametrize("sent", ["has space", "a" * 129, "slash/in/it", "quote\"", "<script>", "é"])
def test_an_unusable_incoming_request_id_is_replaced(client, sent) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": sent.encode()})
    echoed = response.headers["X-Request-ID"]
    assert echoed != sent and GENERATED_ID.fullmatch(echoed)


def test_errors_and_problems_carry_the_request_id(client) -> None:
    headers = {"X-Request-ID": "req-1"}
    not_routed = client.get("/nowhere", headers=headers)
    not_found = client.get("/v1/violations/v999", headers=headers)
    invalid = client.get("/v1/violations", params={"limitt": "5"}, headers=headers)
    wrong_method = client.delete("/healthz", headers=headers)
    for response, status in ((not_routed, 404), (not_found, 404), (invalid, 422), (wrong_method, 405)):
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["X-Request-ID"] == "req-1"


def test_a_500_carries_the_request_id_and_is_counted(tmp_path: Path, metrics: Metrics) -> None:
    store = SqliteStore.in_directory(tmp_path)
    store.close()  # every query fails inside sqlite3: a bug, as seen from outside
    with TestClient(create_app(ApiServices(store=store, metrics=metrics)),
                    raise_server_exceptions=False) as client:
        response = client.get("/v1/violations", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500 and response.headers["X-Request-ID"] == "req-500"
    assert sample(metrics, "citywatch_http_requests_total", method="GET", route="/v1/violations",
                  status="500") == 1
    assert sample(metrics, "citywatch_http_requests_in_flight") == 0


def test_a_refused_websocket_handshake_carries_the_request_id(tmp_path: Path) -> None:
    api = alert_api(tmp_path)  # keys required: no key, refused before the handshake
    try:
        client = api.client()
        with pytest.raises(WebSocketDenialResponse) as refused, \
                client.websocket_connect("/v1/ws/violations", headers={"X-Request-ID": "ws-1"}):
            pass
        assert refused.value.status_code == 401 and refused.value.headers["X-Request-ID"] == "ws-1"
        assert sample(api.services.metrics, "citywatch_http_requests_total", method="WEBSOCKET",
                      route="/v1/ws/violations", status="401") == 1
    finally:
        api.close()


def test_a_headless_role_echoes_request_ids_and_counts_its_requests() -> None:
    metrics = Metrics()
    app = create_status_app(RoleServices(metrics=metrics, readiness=list, status=dict), "citywatch ingest")
    with TestClient(app) as client:
        response = client.get("/v1/status", headers={"X-Request-ID": "role-1"})
    assert response.headers["X-Request-ID"] == "role-1"
    assert sample(metrics, "citywatch_http_requests_total", method="GET", route="/v1/status",
                  status="200") == 1


# The request id in the logs


def log_record(message: str) -> logging.LogRecord:
    record = logging.LogRecord("citywatch.test", logging.WARNING, __file__, 1, message, (), None)
    RequestIdFilter().filter(record)
    return record


def test_records_written_while_a_request_is_handled_carry_its_id() -> None:
    token = bind_request_id("req-42")
    try:
        inside = log_record("store slow")
    finally:
        unbind_request_id(token)
    outside = log_record("started")
    line = json.loads(JsonFormatter().format(inside))
    assert line["request_id"] == "req-42" and line["message"] == "store slow"
    assert line["level"] == "WARNING" and line["logger"] == "citywatch.test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert "request_id" not in json.loads(JsonFormatter().format(outside))
    assert TextFormatter().format(inside).endswith("citywatch.test: store slow request_id=req-42")
    assert TextFormatter().format(outside).endswith("citywatch.test: started")


def test_a_json_record_with_a_traceback_stays_on_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("citywatch.test", logging.ERROR, __file__, 1, "failed:\n%s", ("x",),
                                   sys.exc_info())
    RequestIdFilter().filter(record)
    text = JsonFormatter().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "failed:\nx" and "ValueError: bad\nthing" in line["exception"]


def test_an_unknown_log_format_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("logging:\n  format: xml\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    assert "logging.format" in str(refused.value)
    path.write_text("logging:\n  format: json\n")
    assert load_settings(path).logging.format == "json"


# HTTP metrics


def stored_violation(n: int) -> Violation:
    return Violation(violation_id=f"v{n:03d}", type="bin_overflow", severity=Severity.MEDIUM,
                     device_id="bin-1", start_time_ms=T0_MS, updated_time_ms=T0_MS,
                     status=ViolationStatus.OPEN,
                     evidence=Evidence(event_ids=[f"e{n}"]))


def test_requests_are_counted_by_route_template_never_by_raw_path(client, store, metrics) -> None:
    store.write_violations([stored_violation(1)])
    store.flush()
    assert client.get("/v1/violations/v001").status_code == 200
    assert client.get("/v1/violations/v002").status_code == 404
    assert client.get("/v1/violations/v003").status_code == 404
    client.get("/no/such/page")
    client.get("/no/other/page")

    assert sample(metrics, "citywatch_http_requests_total", method="GET", route=VIOLATION_ROUTE,
                  status="200") == 1
    assert sample(metrics, "citywatch_http_requests_total", method="GET", route=VIOLATION_ROUTE,
                  status="404") == 2
    assert sample(metrics, "citywatch_http_requests_total", method="GET", route="unmatched",
                  status="404") == 2
    assert sample(metrics, "citywatch_http_request_duration_seconds_count", method="GET",
                  route=VIOLATION_ROUTE) == 3
    assert sample(metrics, "citywatch_http_requests_in_flight") == 0
    exposition = metrics.exposition().decode()
    assert "v001" not in exposition and "/no/such/page" not in exposition


def test_unknown_methods_are_one_label(client, metrics) -> None:
    client.request("BREW", "/healthz")
    assert sample(metrics, "citywatch_http_requests_total", method="OTHER", route="/healthz",
                  status="405") == 1


def test_live_streams_are_counted_but_kept_out_of_latency_and_in_flight(tmp_path: Path) -> None:
    api = alert_api(tmp_path, api=ApiSettings(auth=AuthMode.DISABLED))
    metrics = api.services.metrics
    try:
        with ApiServer(api.app) as server:
            with httpx.stream("GET", server.base_url + "/v1/stream/violations",
                              timeout=httpx.Timeout(10, read=None)) as response:
                assert response.headers["X-Request-ID"]
                api.feed.publish([violation(1)])
                lines = response.iter_lines()  # kept: a dropped line iterator would close the stream
                first = next(line for line in lines if line.startswith("data: "))
                assert "v0001" in first, first
                assert sample(metrics, "citywatch_http_streams_open", kind="sse") == 1
                assert sample(metrics, "citywatch_http_requests_in_flight") == 0
                assert sample(metrics, "citywatch_http_requests_total", method="GET",
                              route="/v1/stream/violations", status="200") == 1
            wait_for(lambda: sample(metrics, "citywatch_http_streams_open", kind="sse") == 0,
                     message="the stream to be seen closed")
            assert sample(metrics, "citywatch_http_request_duration_seconds_count", method="GET",
                          route="/v1/stream/violations") == 0
    finally:
        api.close()


def test_an_accepted_websocket_is_counted_and_open_while_connected(tmp_path: Path) -> None:
    api = alert_api(tmp_path, api=ApiSettings(auth=AuthMode.DISABLED))
    metrics = api.services.metrics
    try:
        with ApiServer(api.app) as server, \
                connect(server.ws_url + "/v1/ws/violations", additional_headers={"X-Request-ID": "ws-2"}) \
                as ws:
            assert ws.response is not None and ws.response.headers["X-Request-ID"] == "ws-2"
            api.feed.publish([violation(1)])
            assert json.loads(ws.recv(timeout=10))["type"] == "violation"
            assert sample(metrics, "citywatch_http_streams_open", kind="websocket") == 1
            assert sample(metrics, "citywatch_http_requests_in_flight") == 0
            ws.close()
            wait_for(lambda: sample(metrics, "citywatch_http_streams_open", kind="websocket") == 0,
                     message="the WebSocket to be seen closed")
        assert sample(metrics, "citywatch_http_requests_total", method="WEBSOCKET", route="/v1/ws/violations",
                      status="101") == 1
        assert sample(metrics, "citywatch_http_request_duration_seconds_count", method="WEBSOCKET",
                      route="/v1/ws/violations") == 0
    finally:
        api.close()


# GET /version


def test_version_names_citywatch_python_and_the_store_schema(client) -> None:
    response = client.get("/version")
    assert response.status_code == 200
    assert response.json() == {"version": "0.1.0", "python": platform.python_version(),
                               "schemas": {"sqlite_store": SCHEMA_VERSION}}


def test_version_needs_no_key_on_an_api_that_requires_keys(tmp_path: Path) -> None:
    api = alert_api(tmp_path)
    try:
        client = api.client()
        assert client.get("/v1/violations").status_code == 401
        assert client.get("/version").json()["version"] == "0.1.0"
        assert "/version" in client.get("/openapi.json").json()["paths"]
    finally:
        api.close()


def test_a_headless_role_answers_version_too() -> None:
    app = create_status_app(RoleServices(metrics=Metrics(), readiness=list, status=dict), "citywatch process")
    with TestClient(app) as client:
        assert client.get("/version").json()["schemas"] == {"sqlite_store": SCHEMA_VERSION}
        assert "/version" in client.get("/openapi.json").json()["paths"]

