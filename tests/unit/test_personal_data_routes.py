"""Every route that can return a plate or an evidence link masks it without `plates` and audits it with.

The API is served by uvicorn over real sockets (SSE and WebSocket included) on a real SQLite store that
holds a camera violation, the camera event it was judged on and two rejected camera messages. The raw
body of each answer is searched for the plate and the evidence host. The route list is checked against
the app's own routes, so a new GET route has to be classified here (carrying personal data or not).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest
from fastapi.routing import APIWebSocketRoute, iter_route_contexts
from websockets.sync.client import connect

from api.access.keys import Scope
from core.case_settings import CasePriority, Verification
from core.masking import DEAD_LETTERS, EVENTS, VIOLATIONS
from core.models import DeadLetter, Event
from core.settings import ApiSettings, AuthMode
from processors.cases.model import Case, CaseOrigin, CaseState
from store.open311 import FiledRequest, Open311Store, Reporter
from tests.support.alerts import AlertApi, alert_api, bearer, violation
from tests.support.events import T0_MS, reading
from tests.support.servers import ApiServer

PLATE = "粤B12345"
# JSON may escape it (\u7ca4B12345): the raw body is searched for both spellings.
PLATE_SPELLINGS = (PLATE, json.dumps(PLATE)[1:-1])
MASKED = "粤B1****"
EVIDENCE_HOST = "evidence.example"
CAMERA_EVENT = "cam-ev-1"

CAMERA_VIOLATION = msgspec.structs.replace(violation(1), evidence=msgspec.structs.replace(
    violation(1).evidence, event_ids=[CAMERA_EVENT],
    details={"track_id": "t7", "plate": PLATE, "clip_url": f"https://{EVIDENCE_HOST}/1.mp4", "lane": 2}))
CAMERA_REPORT = Event(
    event_id=CAMERA_EVENT, device_id="cam-1", kind="camera_violation", event_time_ms=T0_MS,
    ingest_time_ms=T0_MS, source="camera_violation",
    attributes={"violation_code": "1625", "violation_type": "red_light", "plate": PLATE,
                "plate_color": "blue", "lane": 2, "evidence_url": f"https://{EVIDENCE_HOST}/a.jpg",
                "evidence_urls": [f"https://{EVIDENCE_HOST}/b.jpg", f"https://{EVIDENCE_HOST}/c.mp4"]})
REJECTED_JSON = DeadLetter(
    reason="invalid_field", detail="lane: expected at most 32", topic="cameras/cam-1/violations",
    source="camera_violation", received_time_ms=T0_MS,
    payload=json.dumps({"device_id": "cam-1", "lane": 99, "plate": PLATE,
                        "evidence_url": f"https://{EVIDENCE_HOST}/d.jpg"}, ensure_ascii=False).encode())
# Cut at dead_letter_payload_bytes: no longer JSON, the plate and link are still in it.
REJECTED_CUT = DeadLetter(
    reason="malformed_json", detail="unexpected end of input", topic="cameras/cam-1/violations",
    source="camera_violation", received_time_ms=T0_MS + 1,
    payload=f'{{"device_id": "cam-1", "plate": "{PLATE}", "evidence_url": "https://{EVIDENCE_HOST}/e.jpg", '
            '"la'.encode())
# A case with a photo of the finished work, linked to the camera violation (its plate and clip).
WORKED_CASE = Case(case_id="c_0001", type="parking", state=CaseState.REPORTED_DONE,
                   priority=CasePriority.HIGH, verify=Verification.PERSON, origin=CaseOrigin.VIOLATION,
                   created_by="routing",
                   created_time_ms=T0_MS, updated_time_ms=T0_MS, place="cam-1",
                   photo_url=f"https://{EVIDENCE_HOST}/done.jpg", open_violations=1)


@dataclass(frozen=True)
class Served:
    api: AlertApi
    server: ApiServer
    http: httpx.Client

    def get(self, url: str, token: str) -> httpx.Response:
        return self.http.get(url, headers=bearer(token))


def _sse_first_message(served: Served, url: str, token: str) -> tuple[int, str]:
    with served.http.stream("GET", url, headers=bearer(token)) as response:
        if response.status_code != 200:
            return response.status_code, response.read().decode()
        for line in response.iter_lines():
            if line.startswith("data: "):
                return 200, line
    raise AssertionError("the stream ended without a message")


def _ws_first_message(served: Served, url: str, token: str) -> tuple[int, str]:
    with connect(served.server.ws_url + url, additional_headers=bearer(token)) as ws:
        message = str(ws.recv(timeout=10))
    return (403 if '"error"' in message else 200), message


Fetch = Callable[[Served, str, str], tuple[int, str]]


def _get(served: Served, url: str, token: str) -> tuple[int, str]:
    response = served.get(url, token)
    return response.status_code, response.text


@dataclass(frozen=True)
class PersonalRoute:
    url: str
    scope: Scope
    # The audit record's action, and the ids it must name.
    action: str
    disclosed: str
    fetch: Fetch = _get
    # Whether it answers a plate (else only evidence links: a case's photos).
    plate: bool = True


# Route path -> how it is read. Each of these can answer with plates or evidence links.
PERSONAL: dict[str, PersonalRoute] = {
    "/v1/violations": PersonalRoute("/v1/violations", Scope.VIOLATIONS_READ, "GET /v1/violations",
                                    "plates/evidence of violations v0001"),
    "/v1/violations/{violation_id}": PersonalRoute(
        "/v1/violations/v0001", Scope.VIOLATIONS_READ, "GET /v1/violations/v0001",
        "plates/evidence of violations v0001"),
    "/v1/exports/violations.csv": PersonalRoute(
        "/v1/exports/violations.csv", Scope.VIOLATIONS_READ, "GET /v1/exports/violations.csv",
        "plates/evidence of violations v0001"),
    "/v1/exports/violations.geojson": PersonalRoute(
        "/v1/exports/violations.geojson", Scope.VIOLATIONS_READ, "GET /v1/exports/violations.geojson",
        "plates/evidence of violations v0001"),
    "/v1/events": PersonalRoute("/v1/events", Scope.READINGS_READ, "GET /v1/events",
                                f"plates/evidence of events {CAMERA_EVENT}"),
    "/v1/readings/latest": PersonalRoute(
        "/v1/readings/latest?kind=camera_violation", Scope.READINGS_READ, "GET /v1/readings/latest",
        f"plates/evidence of events {CAMERA_EVENT}"),
    "/v1/dead-letters": PersonalRoute(
        "/v1/dead-letters", Scope.ADMIN, "GET /v1/dead-letters",
        f"plates/evidence of dead letters {REJECTED_CUT.dead_letter_id},{REJECTED_JSON.dead_letter_id}"),
    # Open311 (docs/cases.md): the citizen's photo link; never the reporter's contact details.
    "/open311/v2/requests.{format}": PersonalRoute(
        "/open311/v2/requests.json", Scope.CASES_READ, "GET /open311/v2/requests.json",
        "media of open311 requests c_0001", plate=False),
    "/open311/v2/requests/{service_request_id}.{format}": PersonalRoute(
        "/open311/v2/requests/c_0001.json", Scope.CASES_READ, "GET /open311/v2/requests/c_0001.json",
        "media of open311 requests c_0001", plate=False),
    "/v1/cases": PersonalRoute("/v1/cases", Scope.CASES_READ, "GET /v1/cases",
                               "plates/evidence of cases c_0001", plate=False),
    "/v1/cases/{case_id}": PersonalRoute("/v1/cases/c_0001", Scope.CASES_READ, "GET /v1/cases/c_0001",
                                         "plates/evidence of cases c_0001"),
    "/v1/stream/violations": PersonalRoute(
        "/v1/stream/violations?since=earliest", Scope.VIOLATIONS_READ, "GET /v1/stream/violations",
        "plates/evidence of violations v0001", _sse_first_message),
    "/v1/ws/violations": PersonalRoute(
        "/v1/ws/violations?since=earliest", Scope.VIOLATIONS_READ, "WS /v1/ws/violations",
        "plates/evidence of violations v0001", _ws_first_message),
}

# Route path -> a request to it, and why it carries no personal data.
NOT_PERSONAL: dict[str, tuple[str, str]] = {
    "/healthz": ("/healthz", "liveness only"),
    "/readyz": ("/readyz", "component states"),
    "/version": ("/version", "release, Python and schema versions"),
    "/metrics": ("/metrics", "counters per kind and reason"),
    "/v1/status": ("/v1/status", "role, rates and lag"),
    "/v1/aggregates/violations": (
        "/v1/aggregates/violations?bucket=hour&from=2025-11-26T00:00:00Z&to=2025-11-27T00:00:00Z"
        "&group_by=device&group_by=type", "counts per bucket and device, grid, type ..."),
    "/v1/aggregates/violations/top": (
        "/v1/aggregates/violations/top?by=device&from=2025-11-26T00:00:00Z&to=2025-11-27T00:00:00Z",
        "counts per device, grid, intersection ..."),
    "/v1/readings/{device_id}/series": (
        "/v1/readings/cam-1/series?attribute=plate&from=2025-11-26T00:00:00Z&to=2025-11-27T00:00:00Z",
        "numbers only: a text attribute such as a plate has no points"),
    "/v1/dead-letters/summary": ("/v1/dead-letters/summary", "counts per reason"),
    "/v1/bins/predictions": ("/v1/bins/predictions", "fill forecasts"),
    "/v1/dispatch/plans": ("/v1/dispatch/plans", "truck routes through bins"),
    "/v1/dispatch/plans/{plan_id}": ("/v1/dispatch/plans/x", "truck routes through bins"),
    "/v1/dispatch/plans/{plan_id}/stops.csv": ("/v1/dispatch/plans/x/stops.csv", "truck routes through bins"),
    "/v1/dispatch/plans/{plan_id}/map.geojson": (
        "/v1/dispatch/plans/x/map.geojson", "truck routes through bins"),
    "/v1/cases/evaluation": ("/v1/cases/evaluation?from=2025-11-26T00:00:00Z&to=2025-11-27T00:00:00Z",
                             "counts and rates per department, grid and district"),
    "/v1/cases/evaluation.csv": (
        "/v1/cases/evaluation.csv?from=2025-11-26T00:00:00Z&to=2025-11-27T00:00:00Z",
        "counts and rates per department, grid and district"),
    "/v1/devices": ("/v1/devices", "the device registry"),
    "/v1/indices": ("/v1/indices", "index definitions"),
    "/v1/indices/{index}/{period_kind}/{period_key}": (
        "/v1/indices/traffic/month/2025-11?level=intersection", "rates and scores per place"),
    "/v1/rankings/{index}/{period_kind}/{period_key}": (
        "/v1/rankings/traffic/month/2025-11?level=intersection", "ranks per place"),
    "/v1/reports": ("/v1/reports", "report ids and dates"),
    "/v1/reports/{report_id}": ("/v1/reports/month-2025-11", "rates, scores, ranks and sums per place"),
    "/v1/reports/{report_id}.csv": ("/v1/reports/month-2025-11.csv", "rates, scores, ranks per place"),
    "/v1/reports/{report_id}.html": ("/v1/reports/month-2025-11.html", "rates, scores, ranks per place"),
    "/open311/v2/services.{format}": ("/open311/v2/services.json", "the services citizens file under"),
    "/open311/v2/services/{service_code}.{format}": (
        "/open311/v2/services/traffic-signal-broken.json", "a service's questions"),
    "/v1/devices/{device_id}": ("/v1/devices/cam-1", "the device registry"),
    "/v1/subscriptions": ("/v1/subscriptions", "webhook URLs and filters"),
    "/v1/subscriptions/{subscription_id}": ("/v1/subscriptions/x", "webhook URL and filter"),
    "/v1/subscriptions/{subscription_id}/deliveries": (
        "/v1/subscriptions/x/deliveries", "delivery states, never the bodies"),
    "/v1/subscriptions/{subscription_id}/dead-letters": (
        "/v1/subscriptions/x/dead-letters", "delivery states, never the bodies"),
    "/v1/violations/{violation_id}/history": (
        "/v1/violations/v0001/history",
        "state changes, who made them and people's notes; never the evidence"),
    "/v1/admin/keys": ("/v1/admin/keys", "key names and scopes"),
    "/v1/admin/audit": ("/v1/admin/audit", "which records were read, by id, never their plates"),
    "/openapi.json": ("/openapi.json", "the API description"),
    "/docs": ("/docs", "the interactive API docs"),
    "/": ("/", "the console's page"),
    "/v1/console/session": ("/v1/console/session", "the key's name and scopes, map layers and tiles"),
    "/v1/console/devices": ("/v1/console/devices", "the device registry"),
    "/v1/console/intersections": ("/v1/console/intersections", "intersection ids"),
    "/v1/console/intersections/{intersection_id}": (
        "/v1/console/intersections/ix-1", "signal phases, detector numbers, when cameras were last seen"),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    api = alert_api(tmp_path_factory.mktemp("personal"))
    api.store.write_violations([CAMERA_VIOLATION, violation(2, plate=None)])
    api.store.write_events([CAMERA_REPORT, reading("bin-1", 0, fill_pct=10)])
    api.store.write_dead_letters([REJECTED_JSON, REJECTED_CUT])
    api.store.flush()
    api.feed.publish([CAMERA_VIOLATION])
    with api.cases.store.transaction() as tx:
        tx.insert(WORKED_CASE, [])
        tx.link_violation(WORKED_CASE.case_id, CAMERA_VIOLATION.violation_id, T0_MS)
        # The case was also filed through Open311, with a photo and the reporter's contact details.
        Open311Store.add_in(tx.executor, FiledRequest(
            case_id=WORKED_CASE.case_id, service_code="traffic-illegal-parking", requested_time_ms=time_ms(),
            media_url=f"https://{EVIDENCE_HOST}/report.jpg"),
            Reporter(email="li@example.com", phone="13800138000"))
    with ApiServer(api.app) as server, httpx.Client(base_url=server.base_url, timeout=10) as http:
        yield Served(api, server, http)
    api.close()


def time_ms() -> int:
    return time.time_ns() // 1_000_000


def _readable_routes(served: Served) -> set[str]:
    # Through FastAPI's own walk of included routers (app.routes lists the routers, not their routes).
    return {context.path for context in iter_route_contexts(served.api.app.routes)
            if isinstance(context.original_route, APIWebSocketRoute) or "GET" in (context.methods or ())}


def _shows_plate(body: str) -> bool:
    return any(spelling in body for spelling in PLATE_SPELLINGS)


def _audit_of(served: Served, token: str) -> list[tuple[str, str]]:
    assert served.api.access.audit_log is not None
    key_id = token.split("_")[1]
    return [(r.action, r.what) for r in served.api.access.audit_log.query(key_id=key_id)]


def test_every_readable_route_is_classified_as_carrying_personal_data_or_not(served: Served) -> None:
    assert set(PERSONAL).isdisjoint(NOT_PERSONAL)
    unclassified = _readable_routes(served) - set(PERSONAL) - set(NOT_PERSONAL)
    assert not unclassified, f"classify these routes in PERSONAL (masked) or NOT_PERSONAL: {unclassified}"
    gone = (set(PERSONAL) | set(NOT_PERSONAL)) - _readable_routes(served)
    assert not gone, f"routes listed here that the app no longer has: {gone}"


@pytest.mark.parametrize("path", sorted(PERSONAL))
def test_without_the_plates_scope_no_plate_or_evidence_link_is_answered(served: Served, path: str) -> None:
    route = PERSONAL[path]
    # Every scope but plates (and admin, which includes it).
    token = served.api.key(*(s for s in Scope if s not in (Scope.PLATES, Scope.ADMIN)))
    status, body = route.fetch(served, route.url, token)
    assert not _shows_plate(body) and EVIDENCE_HOST not in body, body
    if route.scope is Scope.ADMIN:
        # Only admin keys read raw rejected input, and admin includes plates: refused outright.
        assert status == 403
    else:
        assert status == 200, body
        assert not route.plate or any(m in body for m in (MASKED, json.dumps(MASKED)[1:-1])), body
    assert _audit_of(served, token) == []  # nothing disclosed, nothing audited


@pytest.mark.parametrize("path", sorted(PERSONAL))
def test_with_the_plates_scope_plates_and_links_are_answered_and_audited_once(served: Served,
                                                                               path: str) -> None:
    route = PERSONAL[path]
    token = served.api.key(route.scope, Scope.PLATES)
    status, body = route.fetch(served, route.url, token)
    assert status == 200 and f"https://{EVIDENCE_HOST}/" in body, body
    assert _shows_plate(body) is route.plate, body
    assert _audit_of(served, token) == [(route.action, route.disclosed)]


@pytest.mark.parametrize("path", sorted(NOT_PERSONAL))
def test_routes_without_personal_data_answer_none_to_an_admin(served: Served, path: str) -> None:
    # An admin may see everything: whatever these answer is all there is to see.
    served.get("/v1/violations", served.api.key(Scope.ADMIN))  # an audit record for the audit route
    url, _ = NOT_PERSONAL[path]
    response = served.get(url, served.api.key(Scope.ADMIN))
    assert response.status_code in (200, 404, 503), response.text
    assert not _shows_plate(response.text) and EVIDENCE_HOST not in response.text


def test_masked_events_keep_what_is_not_personal(served: Served) -> None:
    token = served.api.key(Scope.READINGS_READ)
    items = served.get("/v1/events?device=cam-1", token).json()["items"]
    assert [item["attributes"] for item in items] == [{
        "violation_code": "1625", "violation_type": "red_light", "plate": MASKED, "plate_color": "blue",
        "lane": 2, "evidence_url": None, "evidence_urls": None}]
    violation_out = served.get("/v1/violations/v0001", served.api.key(Scope.VIOLATIONS_READ)).json()
    assert violation_out["evidence"] == {"event_ids": [CAMERA_EVENT], "snapshot_url": None, "plate": MASKED,
                                         "details": {"track_id": "t7", "plate": MASKED, "clip_url": None,
                                                     "lane": 2}}


def test_a_read_that_discloses_nothing_is_not_audited(served: Served) -> None:
    token = served.api.key(Scope.READINGS_READ, Scope.PLATES)
    assert served.get("/v1/events?device=bin-1", token).json()["items"][0]["attributes"] == {"fill_pct": 10}
    assert _audit_of(served, token) == []


def test_rejected_payloads_are_masked_json_or_not_and_keep_their_ids() -> None:
    masked_json, found = DEAD_LETTERS.mask(REJECTED_JSON)
    assert found and json.loads(masked_json.payload) == {"device_id": "cam-1", "lane": 99, "plate": MASKED,
                                                          "evidence_url": None}
    masked_cut, found = DEAD_LETTERS.mask(REJECTED_CUT)
    text = masked_cut.payload.decode()
    assert found and PLATE not in text and EVIDENCE_HOST not in text and f'"plate": "{MASKED}"' in text
    assert (masked_json.dead_letter_id, masked_cut.dead_letter_id) == (
        REJECTED_JSON.dead_letter_id, REJECTED_CUT.dead_letter_id)
    assert DEAD_LETTERS.mask(DeadLetter(reason="r", detail="d", topic="t", payload=b'{"fill_pct": 5}',
                                        received_time_ms=T0_MS))[1] is False


def test_a_recognised_face_or_plate_name_in_a_rejected_update_is_masked() -> None:
    # Frigate's tracked_object_update as published, with a score out of range so it is rejected.
    face = b'{"type": "face", "id": "1607123955.475377-mxklsc", "name": "Nicolas", "score": 7, ' \
           b'"camera": "front_door_cam", "timestamp": 1607123958.748393}'
    masked, found = DEAD_LETTERS.mask(DeadLetter(reason="invalid_field", detail="score: 7 is above 1",
                                                 topic="frigate/tracked_object_update", payload=face,
                                                 received_time_ms=T0_MS))
    assert found and json.loads(masked.payload)["name"] == "Nic****"
    # Elsewhere a "name" is not personal: a SenML or device name stays readable.
    device = b'{"type": "bin", "name": "bin-0101"}'
    assert DEAD_LETTERS.mask(DeadLetter(reason="r", detail="d", topic="t", payload=device,
                                        received_time_ms=T0_MS))[1] is False


def test_plates_and_links_are_found_at_any_depth_and_under_any_link_name() -> None:
    nested = msgspec.structs.replace(CAMERA_REPORT, attributes={
        "vehicles": [{"license_plate": PLATE, "image": f"https://{EVIDENCE_HOST}/f.jpg"}],
        "frigate": {"recognized_license_plate": [PLATE, 0.92], "thumbnail_url": "/local/path.jpg"},
        "speed_kmh": 71.5})
    masked, found = EVENTS.mask(nested)
    assert found and masked.attributes == {
        "vehicles": [{"license_plate": MASKED, "image": None}],
        "frigate": {"recognized_license_plate": [MASKED, None], "thumbnail_url": None},
        "speed_kmh": 71.5}
    assert nested.attributes["vehicles"][0]["license_plate"] == PLATE  # the stored record is untouched
    assert VIOLATIONS.mask(violation(2, plate=None)) == (violation(2, plate=None), False)


def test_looking_the_key_up_for_its_scopes_takes_no_second_rate_limit_token(tmp_path: Path) -> None:
    api = alert_api(tmp_path, api=ApiSettings(auth=AuthMode.REQUIRED, rate_limit_per_s=0.01,
                                              rate_limit_burst=2))
    try:
        client = api.client()
        token = api.key(Scope.READINGS_READ)
        statuses = [client.get("/v1/events", headers=bearer(token)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
    finally:
        api.close()
