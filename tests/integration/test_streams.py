"""Live streams over real sockets: SSE and WebSocket clients against uvicorn, disconnecting and resuming.

The API runs under uvicorn on a free port; changes go in through the feed the processor publishes to.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from api.access.keys import Scope
from core.models import ViolationStatus
from core.settings import AlertSettings
from tests.support.alerts import AlertApi, alert_api, bearer, violation
from tests.support.servers import ApiServer

pytestmark = pytest.mark.integration


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[AlertApi, ApiServer]]:
    api = alert_api(tmp_path, alerts=AlertSettings(feed_retention=40_000, stream_max_lag=5000,
                                                   stream_heartbeat_s=0.2))
    with ApiServer(api.app) as server:
        yield api, server
    api.close()


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream into {id, event, data} dicts (comments and retry lines skipped)."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in event:
                event["data"] = json.loads(event["data"])
                yield event
            event = {}
        elif not line.startswith((":", "retry:")):
            name, _, value = line.partition(": ")
            event[name] = value


def take(events: Iterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    return [next(events) for _ in range(n)]


def test_sse_client_disconnects_and_resumes_with_last_event_id_without_gaps(served) -> None:
    api, server = served
    headers = bearer(api.key(Scope.VIOLATIONS_READ))
    url = f"{server.base_url}/v1/stream/violations"
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", url, params={"grid": "FT-11", "since": "earliest"}, headers=headers) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r)
            api.feed.publish([violation(1), violation(2, grid="LH-02"), violation(3)])
            first = take(events, 2)
        assert [e["data"]["violation"]["violation_id"] for e in first] == ["v0001", "v0003"]
        assert first[0]["event"] == "violation" and first[0]["data"]["change"] == "opened"
        assert first[0]["data"]["violation"]["evidence"]["plate"] == "粤B1****"

        # While the client is away: more changes, a clear among them.
        api.feed.publish([violation(4), violation(5, grid="LH-02"),
                          violation(1, status=ViolationStatus.CLEARED, updated_offset_ms=9000)])
        resume = {**headers, "Last-Event-ID": first[-1]["id"]}
        with client.stream("GET", url, params={"grid": "FT-11"}, headers=resume) as r:
            resumed = take(sse_events(r), 2)
    assert [(e["data"]["violation"]["violation_id"], e["data"]["change"]) for e in resumed] == [
        ("v0004", "opened"), ("v0001", "cleared")]
    assert [e["id"] for e in first + resumed] == sorted(e["id"] for e in first + resumed)


def test_websocket_client_resumes_with_since_and_sees_plates_only_with_the_scope(served) -> None:
    api, server = served
    token = api.key(Scope.VIOLATIONS_READ, Scope.PLATES)
    url = f"{server.ws_url}/v1/ws/violations?department=traffic&bbox=114.0,22.5,114.1,22.6&since=earliest"
    with connect(url, additional_headers=bearer(token)) as ws:
        api.feed.publish([violation(1), violation(2, lat=23.5), violation(3, department="sanitation"),
                          violation(4)])
        got = [json.loads(ws.recv(timeout=10)) for _ in range(2)]
    assert [m["violation"]["violation_id"] for m in got] == ["v0001", "v0004"]
    assert got[0]["type"] == "violation" and got[0]["violation"]["evidence"]["plate"] == "粤B12345"
    assert got[0]["violation"]["evidence"]["snapshot_url"] == "https://evidence.example/1.jpg"

    api.feed.publish([violation(5), violation(6, lat=0.0)])
    with connect(f"{url}&since={got[-1]['id']}".replace("since=earliest&", ""),
                 additional_headers=bearer(token)) as ws:
        [resumed] = [json.loads(ws.recv(timeout=10))]
    assert resumed["violation"]["violation_id"] == "v0005"
    # Unmasked plates were read: the audit log names the key and the violations.
    records = api.access.audit_log.query() if api.access.audit_log else []
    assert any("v0001" in r.what and r.action == "WS /v1/ws/violations" for r in records)


def refused(url: str, headers: dict[str, str]) -> tuple[int, str]:
    """The HTTP status and detail a WebSocket handshake was refused with (a real websockets client)."""
    with pytest.raises(InvalidStatus) as refusal, connect(url, additional_headers=headers):
        pass
    response = refusal.value.response
    assert "json" in response.headers["content-type"]  # a JSON body, as the SSE endpoint answers
    return response.status_code, json.loads(bytes(response.body or b""))["detail"]


def test_a_cursor_older_than_the_window_is_refused_before_the_stream_starts(tmp_path) -> None:
    api = alert_api(tmp_path, alerts=AlertSettings(feed_retention=10, stream_heartbeat_s=0.2))
    with ApiServer(api.app) as server:
        headers = bearer(api.key(Scope.VIOLATIONS_READ))
        api.feed.publish([violation(n) for n in range(1, 31)])
        url = f"{server.base_url}/v1/stream/violations"
        for since, status, error in [(api.feed.cursor(3), 410, "cursor_expired"),
                                     ("1-5", 410, "cursor_expired"), ("garbage", 400, "invalid_cursor")]:
            # An HTTP error, not an event in a 200: EventSource stops instead of reconnecting forever.
            response = httpx.get(url, params={"since": since}, headers=headers, timeout=10)
            assert response.status_code == status, since
            assert response.json()["detail"].startswith(f"{error}: "), since
            assert "retry:" not in response.text
        expired = httpx.get(url, headers={**headers, "Last-Event-ID": api.feed.cursor(3)}, timeout=10)
        assert expired.status_code == 410 and "GET /v1/violations" in expired.json()["detail"]

        status, detail = refused(f"{server.ws_url}/v1/ws/violations?since={api.feed.cursor(3)}", headers)
        assert status == 410 and detail.startswith("cursor_expired: ") and "no longer held" in detail
        # Still inside the window: resumes.
        with connect(f"{server.ws_url}/v1/ws/violations?since={api.feed.cursor(25)}",
                     additional_headers=headers) as ws:
            assert json.loads(ws.recv(timeout=10))["violation"]["violation_id"] == "v0026"
    api.close()


def test_streams_need_a_key_with_violations_read(served) -> None:
    api, server = served
    url = f"{server.base_url}/v1/stream/violations"
    assert httpx.get(url, timeout=10).status_code == 401
    wrong = bearer(api.key(Scope.READINGS_READ))
    assert httpx.get(url, headers=wrong, timeout=10).status_code == 403
    status, detail = refused(f"{server.ws_url}/v1/ws/violations", {})
    assert status == 401 and "API key is required" in detail
    status, detail = refused(f"{server.ws_url}/v1/ws/violations", wrong)
    assert status == 403 and "violations:read" in detail


@pytest.mark.parametrize(("query", "said"), [
    ("severity=hgh", "unknown severity 'hgh'; did you mean 'high'?"),
    ("status=closed", "unknown status 'closed'"),
    ("type=bin_overflw", "unknown violation type 'bin_overflw'; did you mean 'bin_overflow'?"),
    ("tpye=bin_overflow", "query `tpye`: unknown parameter; did you mean `type`?"),
    ("bbox=1,2,3", "bbox must be four numbers"),
])
def test_a_bad_filter_is_refused_with_the_same_status_and_message_on_both_streams(served, query,
                                                                                  said) -> None:
    api, server = served
    headers = bearer(api.key(Scope.VIOLATIONS_READ))
    response = httpx.get(f"{server.base_url}/v1/stream/violations?{query}", headers=headers, timeout=10)
    assert response.status_code == 422 and said in response.json()["detail"]
    assert refused(f"{server.ws_url}/v1/ws/violations?{query}", headers) == (422, response.json()["detail"])


def test_a_revoked_key_loses_its_open_sse_and_websocket_streams_at_the_next_message(served) -> None:
    api, server = served
    token = api.key(Scope.VIOLATIONS_READ)
    key_id = token.split("_")[1]  # cw_<key id>_<secret>
    admin = bearer(api.key(Scope.ADMIN))
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        with client.stream("GET", "/v1/stream/violations", headers=bearer(token)) as r, \
                connect(f"{server.ws_url}/v1/ws/violations", additional_headers=bearer(token)) as ws:
            events = sse_events(r)
            api.feed.publish([violation(1)])
            assert next(events)["data"]["violation"]["violation_id"] == "v0001"
            assert json.loads(ws.recv(timeout=10))["violation"]["violation_id"] == "v0001"

            assert client.delete(f"/v1/admin/keys/{key_id}", headers=admin).status_code == 204
            api.feed.publish([violation(2)])
            ended = next(events)
            assert ended["event"] == "error" and ended["data"]["error"] == "key_revoked"
            assert list(events) == []  # the stream is over; v0002 never went out
            error = json.loads(ws.recv(timeout=10))
            assert error["type"] == "error" and error["error"] == "key_revoked"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        # EventSource reconnects after the end of a stream: the key is refused, so it stops there.
        assert client.get("/v1/stream/violations", headers=bearer(token)).status_code == 401
