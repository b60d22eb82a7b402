"""Open311 GeoReport v2 on the cases: the spec's own example requests and responses, routing like a
violation, status following the case, the spec's error array, and no personal data in what is read.

The examples are quoted from the GeoReport v2 specification, https://wiki.open311.org/GeoReport_v2
(source: github.com/open311/open311.github.io, GeoReport_v2/index.md): "GET Service List", "GET Service
Definition", "POST Service Request" (Example Request), "GET Service Requests" and "Errors".
Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.access.keys import Scope
from core.case_settings import CaseSettings
from core.ingest_config import GeoSettings
from core.settings import RelationalSettings
from processors.cases.routing import CaseRouter
from processors.cases.service import CaseService, NewCase
from store.cases import CaseStore
from tests.support.alerts import AlertApi, alert_api, bearer, violation

# "GET Service List", example response (JSON): the fields of a service.
SPEC_SERVICE = {
    "service_code": "001", "service_name": "Cans left out 24x7",
    "description": "Garbage or recycling cans that have been left out for more than 24 hours after "
                   "collection. Violators will be cited.",
    "metadata": True, "type": "realtime", "keywords": "lorem, ipsum, dolor", "group": "sanitation"}
# "GET Service Definition", example response (JSON); its keys are strings here (a service's values are
# configured as text).
SPEC_DEFINITION = {
    "service_code": "DMV66",
    "attributes": [{"variable": True, "code": "WHISHETN", "datatype": "singlevaluelist", "required": True,
                    "datatype_description": None, "order": 1,
                    "description": "What is the ticket/tag/DL number?",
                    "values": [{"key": "123", "name": "Ford"}, {"key": "124", "name": "Chrysler"}]}]}
# "POST Service Request", Example Request (the body, as sent; api_key=xyz is replaced by a real key).
SPEC_POST = (
    "api_key=xyz&jurisdiction_id=city.gov&service_code=001&lat=37.76524078&long=-122.4212043"
    "&address_string=1234+5th+street&email=smit333%40sfgov.edu&device_id=tt222111&account_id=123456"
    "&first_name=john&last_name=smith&phone=111111111&description=A+large+sinkhole+is+destroying+the+street"
    "&media_url=http%3A%2F%2Ffarm3.static.flickr.com%2F2002%2F2212426634_5ed477a060.jpg"
    "&attribute[WHISPAWN]=123456&attribute[WHISDORN]=COISL001")
SPEC_NOTICE = ("The City will inspect and require the responsible party to correct within 24 hours and/or "
               "issue a Correction Notice or Notice of Violation of the Public Works Code")
# "GET Service Requests", example response (JSON): the fields of a request.
SPEC_REQUEST_FIELDS = {
    "service_request_id", "status", "status_notes", "service_name", "service_code", "description",
    "agency_responsible", "service_notice", "requested_datetime", "updated_datetime", "expected_datetime",
    "address", "address_id", "zipcode", "lat", "long", "media_url"}
PERSONAL = ("smit333", "sfgov.edu", "tt222111", "john", "smith", "111111111")

SETTINGS = CaseSettings.model_validate({
    "routes": [
        {"match": {"types": ["bin_overflow"], "grids": ["FT-11"]}, "department": "sanitation-west",
         "category": "0101", "priority": "high"},
        {"match": {"types": ["bin_overflow"], "grids": ["FT-12"]}, "department": "sanitation-east",
         "category": "0101"},
        {"match": {"types": ["cans_left_out"]}, "department": "public-works", "category": "0102"},
    ],
    "open311": {"services": [
        {"code": "001", "case_type": "cans_left_out", "name": SPEC_SERVICE["service_name"],
         "description": SPEC_SERVICE["description"], "group": "sanitation",
         "keywords": ["lorem", "ipsum", "dolor"], "notice": SPEC_NOTICE,
         "attributes": [{"code": "WHISPAWN", "description": "Pawn ticket", "required": True},
                        {"code": "WHISDORN", "description": "Dorn code", "order": 2}]},
        {"code": "DMV66", "case_type": "dmv", "name": "DMV",
         "attributes": [{"code": "WHISHETN", "description": "What is the ticket/tag/DL number?",
                         "datatype": "singlevaluelist", "required": True,
                         "values": [{"key": "123", "name": "Ford"}, {"key": "124", "name": "Chrysler"}]}]},
        {"code": "sanitation-bin-overflow", "case_type": "bin_overflow", "name": "Overflowing bin",
         "group": "sanitation"},
        {"code": "graffiti", "case_type": "graffiti", "name": "Graffiti",
         "attributes": [{"code": "surface", "description": "Painted on what?", "datatype": "multivaluelist",
                         "values": [{"key": "wall", "name": "A wall"}, {"key": "bench", "name": "A bench"},
                                    {"key": "sign", "name": "A sign"}]}]},
    ]}})
# Two grids side by side in Futian: west of 114.05 is FT-11, east of it FT-12.
EAST_POINT = {"lat": 22.54, "long": 114.07}


def _grid(name: str, west: float, east: float) -> dict[str, Any]:
    ring = [[west, 22.50], [east, 22.50], [east, 22.58], [west, 22.58], [west, 22.50]]
    return {"type": "Feature", "properties": {"grid": name, "district": "futian"},
            "geometry": {"type": "Polygon", "coordinates": [ring]}}


@pytest.fixture
def api(tmp_path: Path, relational: RelationalSettings) -> Iterator[AlertApi]:
    grids = tmp_path / "grids.geojson"
    grids.write_text(json.dumps({"type": "FeatureCollection", "features": [
        _grid("FT-11", 114.00, 114.05), _grid("FT-12", 114.05, 114.10)]}))
    # No route takes graffiti: its department comes from geo.departments, as a violation's would.
    geo = GeoSettings(grids_file=grids,
                      departments=[{"violation_type": "graffiti", "department": "city-looks"}])
    api = alert_api(tmp_path, cases=SETTINGS, relational=relational, geo=geo)
    yield api
    api.close()


def reader(api: AlertApi, *scopes: Scope) -> dict[str, str]:
    return bearer(api.key(Scope.CASES_READ, *scopes))


def file_request(api: AlertApi, client: TestClient, **fields: Any) -> str:
    body = {"api_key": api.key(Scope.CASES_WRITE), **fields}
    response = client.post("/open311/v2/requests.json", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()[0]["service_request_id"])


def test_the_service_list_has_the_specs_fields(api: AlertApi, client: TestClient) -> None:
    response = client.get("/open311/v2/services.json", headers=reader(api))
    assert response.status_code == 200
    services = response.json()
    assert services[0] == SPEC_SERVICE
    assert [s["service_code"] for s in services] == ["001", "DMV66", "sanitation-bin-overflow", "graffiti"]
    assert services[2]["metadata"] is False and services[2]["keywords"] == ""


def test_the_default_services_cover_sanitation_and_traffic() -> None:
    services = {s.code: s.case_type for s in CaseSettings().open311.services}
    assert services == {"sanitation-bin-overflow": "bin_overflow", "water-black-odorous": "water_black_odour",
                        "traffic-illegal-parking": "illegal_parking", "traffic-signal-broken": "signal_fault"}


def test_a_service_definition_is_the_specs_example(api: AlertApi, client: TestClient) -> None:
    response = client.get("/open311/v2/services/DMV66.json", headers=reader(api))
    assert response.status_code == 200
    assert response.json() == SPEC_DEFINITION


def test_the_specs_example_post_files_a_case_and_keeps_the_reporter_out_of_every_answer(
        api: AlertApi, client: TestClient) -> None:
    body = SPEC_POST.replace("api_key=xyz", f"api_key={api.key(Scope.CASES_WRITE)}")
    response = client.post("/open311/v2/requests.json", content=body,
                           headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    assert response.status_code == 201, response.text
    [created] = response.json()
    request_id = created["service_request_id"]
    assert created == {"service_request_id": request_id, "service_notice": SPEC_NOTICE,
                       "account_id": "123456"}

    # The case, routed by its type (the point is in San Francisco: outside every grid).
    case = client.get(f"/v1/cases/{request_id}", headers=reader(api)).json()
    assert (case["type"], case["department"], case["category"], case["state"], case["grid"]) == (
        "cans_left_out", "public-works", "0102", "registered", None)
    assert case["description"] == "A large sinkhole is destroying the street"

    answered = client.get(f"/open311/v2/requests/{request_id}.json", headers=reader(api))
    assert answered.status_code == 200
    [shown] = answered.json()
    assert set(shown) == SPEC_REQUEST_FIELDS
    assert {k: shown[k] for k in ("service_request_id", "status", "service_name", "service_code",
                                  "description", "agency_responsible", "service_notice", "address",
                                  "lat", "long", "media_url")} == {
        "service_request_id": request_id, "status": "open", "service_name": "Cans left out 24x7",
        "service_code": "001", "description": "A large sinkhole is destroying the street",
        "agency_responsible": "public-works", "service_notice": SPEC_NOTICE, "address": "1234 5th street",
        "lat": 37.76524078, "long": -122.4212043, "media_url": None}
    assert shown["requested_datetime"].endswith("Z") and shown["status_notes"] == (
        "Registered; waiting to be dispatched.")
    for text in (answered.text, client.get("/open311/v2/requests.json", headers=reader(api)).text,
                 client.get(f"/v1/cases/{request_id}", headers=reader(api, Scope.PLATES)).text):
        assert not [word for word in PERSONAL if word in text]
    # Kept only to call the citizen back.
    assert api.services.open311 is not None
    reporter = api.services.open311.reporter(request_id)
    assert reporter is not None and (reporter.email, reporter.phone, reporter.last_name) == (
        "smit333@sfgov.edu", "111111111", "smith")


def test_a_request_is_routed_like_a_violation_of_its_type_in_its_grid(api: AlertApi,
                                                                      client: TestClient) -> None:
    api.cases.violation_changes([violation(1, type="bin_overflow", grid="FT-12", device="bin-9")])
    request_id = file_request(api, client, service_code="sanitation-bin-overflow", **EAST_POINT,
                              description="the bin at the bus stop overflows")
    cases = {c["origin"]: c for c in client.get("/v1/cases", headers=reader(api)).json()["items"]}
    assert cases["manual"]["case_id"] == request_id
    routed = [(c["department"], c["category"], c["priority"], c["grid"]) for c in
              (cases["violation"], cases["manual"])]
    assert routed == [("sanitation-east", "0101", "normal", "FT-12")] * 2
    assert cases["manual"]["district"] == "futian"

    west = file_request(api, client, service_code="sanitation-bin-overflow", lat=22.54, long=114.02)
    [shown] = client.get(f"/open311/v2/requests/{west}.json", headers=reader(api)).json()
    assert shown["agency_responsible"] == "sanitation-west"


def test_a_request_no_route_takes_goes_to_the_geo_department_with_its_list_answers(
        api: AlertApi, client: TestClient) -> None:
    body = (f"api_key={api.key(Scope.CASES_WRITE)}&service_code=graffiti&lat=22.54&long=114.07"
            "&attribute[surface][]=wall&attribute[surface][]=sign")
    response = client.post("/open311/v2/requests.json", content=body,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 201, response.text
    request_id = response.json()[0]["service_request_id"]
    case = client.get(f"/v1/cases/{request_id}", headers=reader(api)).json()
    assert (case["department"], case["category"], case["grid"], case["description"]) == (
        "city-looks", None, "FT-12", "Graffiti")
    assert api.services.open311 is not None
    found = api.services.open311.get(request_id)
    assert found is not None and found.request.attributes == {"surface": ["wall", "sign"]}


def test_the_status_follows_the_case_to_closed(api: AlertApi, client: TestClient) -> None:
    request_id = file_request(api, client, service_code="sanitation-bin-overflow", **EAST_POINT)
    worker = bearer(api.key(Scope.CASES_WRITE))
    for to, fields in [("dispatched", {}), ("accepted", {}), ("in_progress", {}),
                       ("reported_done", {"note": "emptied", "photo_url": "https://photos.example/ok.jpg"}),
                       ("verified", {}), ("closed", {})]:
        moved = client.post(f"/v1/cases/{request_id}/transitions", json={"to": to, **fields}, headers=worker)
        assert moved.status_code == 200, moved.text
        [shown] = client.get(f"/open311/v2/requests/{request_id}.json", headers=reader(api)).json()
        assert shown["status"] == ("closed" if to == "closed" else "open")
    assert shown["status_notes"] == "Closed: the work was done and verified."

    def ids(query: str) -> list[str]:
        return [r["service_request_id"] for r in
                client.get(f"/open311/v2/requests.json?{query}", headers=reader(api)).json()]

    assert ids("status=closed") == [request_id] and ids("status=open") == []
    assert ids("status=open,closed") == [request_id]


def test_the_request_list_filters_as_the_spec_says(api: AlertApi, client: TestClient) -> None:
    first = file_request(api, client, service_code="sanitation-bin-overflow", **EAST_POINT)
    second = file_request(api, client, service_code="DMV66", address_id="545483",
                          attribute={"WHISHETN": "124"})
    third = file_request(api, client, service_code="sanitation-bin-overflow", address_string="8TH AVE")

    def ids(query: str) -> set[str]:
        response = client.get(f"/open311/v2/requests.json?{query}", headers=reader(api))
        assert response.status_code == 200, response.text
        return {r["service_request_id"] for r in response.json()}

    assert ids("") == {first, second, third}
    assert ids(f"service_request_id={first},{third}") == {first, third}
    # service_request_id "overrides all other arguments".
    assert ids(f"service_request_id={second}&service_code=sanitation-bin-overflow") == {second}
    assert ids("service_code=DMV66") == {second}
    assert ids("start_date=2010-05-24T00:00:00Z&end_date=2010-06-24T00:00:00Z&status=open") == set()
    assert ids("start_date=2010-05-24T00:00:00Z") == set()  # 90 days from then


@pytest.mark.parametrize(("query", "description"), [
    ("start_date=2010-01-01T00:00:00Z&end_date=2010-06-24T00:00:00Z",
     "start_date to end_date may not span more than 90 days"),
    ("start_date=yesterday", "start_date 'yesterday' is not a w3 date-time such as 2010-01-01T00:00:00Z"),
    ("end_date=2010-06-24T00:00:00", "end_date '2010-06-24T00:00:00' has no time zone (Z or an offset "
                                     "such as +08:00)"),
    ("status=pending", "status must be open, closed or open,closed, got 'pending'"),
])
def test_a_bad_filter_is_the_specs_400(api: AlertApi, client: TestClient, query: str,
                                        description: str) -> None:
    response = client.get(f"/open311/v2/requests.json?{query}", headers=reader(api))
    assert (response.status_code, response.json()) == (400, [{"code": 400, "description": description}])


@pytest.mark.parametrize(("fields", "status", "description"), [
    ({"lat": 22.54, "long": 114.07}, 400, "service_code was not provided; GET services.json lists them"),
    ({"service_code": "999", "lat": 22.54, "long": 114.07}, 404,
     "service_code '999' was not found; GET services.json lists them"),
    ({"service_code": "sanitation-bin-overflow"}, 400,
     "a location is required: lat and long, address_string or address_id"),
    ({"service_code": "sanitation-bin-overflow", "lat": 22.54}, 400, "lat and long both need to be sent"),
    ({"service_code": "DMV66", "address_id": "1"}, 400,
     "attribute[WHISHETN] is required for service DMV66: What is the ticket/tag/DL number?"),
    ({"service_code": "DMV66", "address_id": "1", "attribute": {"WHISHETN": "125"}}, 400,
     "attribute[WHISHETN] '125' is not one of 123, 124"),
    ({"service_code": "DMV66", "address_id": "1", "attribute": {"WHISHETN": "123", "COLOUR": "red"}}, 400,
     "attribute[COLOUR] is not an attribute of service DMV66"),
    ({"service_code": "sanitation-bin-overflow", "address_id": "1", "media_url": "file:///etc/passwd"}, 400,
     "media_url must be an http(s) URL, got 'file:///etc/passwd'"),
    ({"service_code": "sanitation-bin-overflow", "address_id": "1", "description": "x" * 4001}, 400,
     "description is longer than 4000 characters"),
    ({"service_code": "graffiti", "address_id": "1", "attribute": {"surface": ["wall", "roof"]}}, 400,
     "attribute[surface] 'roof' is not one of wall, bench, sign"),
    ({"service_code": "sanitation-bin-overflow", "lat": "north", "long": 114.07}, 400,
     "lat 'north' and long '114.07' must be WGS84 degrees"),
])
def test_a_post_missing_what_it_needs_is_the_specs_error(api: AlertApi, client: TestClient,
                                                         fields: dict[str, Any], status: int,
                                                         description: str) -> None:
    body = {"api_key": api.key(Scope.CASES_WRITE), **fields}
    response = client.post("/open311/v2/requests.json", json=body)
    assert (response.status_code, response.json()) == (status, [{"code": status, "description": description}])
    assert client.get("/v1/cases", headers=reader(api)).json()["items"] == []


def test_filing_needs_a_key_with_cases_write_as_api_key_or_header(api: AlertApi, client: TestClient) -> None:
    body = {"service_code": "sanitation-bin-overflow", "address_string": "Shennan Road 1"}
    response = client.post("/open311/v2/requests.json", json=body)
    assert (response.status_code, response.json()) == (403, [{"code": 403, "description": (
        "an API key is required: send it as `api_key`, `Authorization: Bearer <key>` or "
        "`X-API-Key: <key>`")}])
    response = client.post("/open311/v2/requests.json", json={**body, "api_key": api.key(Scope.CASES_READ)})
    assert (response.status_code, response.json()) == (403, [{"code": 403, "description": (
        "this API key lacks the scope cases:write")}])
    response = client.post("/open311/v2/requests.json", json={**body, "api_key": "cw_nope_x"})
    assert response.status_code == 403
    assert client.post("/open311/v2/requests.json", json=body,
                       headers=bearer(api.key(Scope.CASES_WRITE))).status_code == 201


def test_reading_needs_cases_read_and_media_needs_plates(api: AlertApi, client: TestClient) -> None:
    request_id = file_request(api, client, service_code="sanitation-bin-overflow", **EAST_POINT,
                              media_url="https://photos.example/bin.jpg")
    for path in ("/open311/v2/services.json", "/open311/v2/requests.json",
                 f"/open311/v2/requests/{request_id}.json"):
        response = client.get(path)
        assert (response.status_code, response.json()[0]["code"]) == (403, 403)
    [shown] = client.get(f"/open311/v2/requests/{request_id}.json", headers=reader(api)).json()
    assert shown["media_url"] is None
    [shown] = client.get(f"/open311/v2/requests/{request_id}.json", headers=reader(api, Scope.PLATES)).json()
    assert shown["media_url"] == "https://photos.example/bin.jpg"


def test_public_reading_shows_requests_without_media_or_contact_details(
        tmp_path: Path, relational: RelationalSettings) -> None:
    public = alert_api(tmp_path, relational=relational, cases=CaseSettings.model_validate(
        {"open311": {"public_read": True}}))
    try:
        client = public.client()
        request_id = file_request(public, client, service_code="traffic-signal-broken", **EAST_POINT,
                                  attribute={"signal_state": "dark"}, media_url="https://photos.example/s.jpg",
                                  description="dark since 8am, 粤B12345 parked under it, call me on "
                                              "138 0013 8000 or li@example.com")
        [shown] = client.get(f"/open311/v2/requests/{request_id}.json").json()
        assert shown["description"] == (
            "dark since 8am, 粤B1**** parked under it, call me on [removed] or [removed]")
        assert shown["media_url"] is None and shown["service_name"] == "Broken traffic signal"
        [shown] = client.get(f"/open311/v2/requests/{request_id}.json",
                             headers=reader(public, Scope.PLATES)).json()
        assert shown["description"] == (
            "dark since 8am, 粤B12345 parked under it, call me on [removed] or [removed]")
        assert shown["media_url"] == "https://photos.example/s.jpg"
        assert client.get("/open311/v2/services.json").status_code == 200
    finally:
        public.close()


def test_only_json_is_served(api: AlertApi, client: TestClient) -> None:
    response = client.get("/open311/v2/services.xml", headers=reader(api))
    assert (response.status_code, response.json()) == (406, [{"code": 406, "description": (
        "only json is served here: ask for .json, not .xml")}])


def test_an_unknown_request_or_service_is_the_specs_404(api: AlertApi, client: TestClient) -> None:
    response = client.get("/open311/v2/requests/c_nope.json", headers=reader(api))
    assert (response.status_code, response.json()) == (404, [{"code": 404, "description": (
        "service_request_id 'c_nope' was not found")}])
    assert client.get("/open311/v2/services/nope.json", headers=reader(api)).status_code == 404


def test_a_report_is_routed_by_the_local_time_it_was_filed_at(tmp_path: Path) -> None:
    settings = CaseSettings.model_validate({"routes": [
        {"match": {"types": ["bin_overflow"], "grids": ["FT-11"], "hours": ["06:00-22:00"]},
         "department": "sanitation", "category": "0101", "priority": "high"},
        {"match": {"types": ["bin_overflow"], "hours": ["22:00-24:00", "00:00-06:00"]},
         "department": "sanitation-night", "category": "0101"}]})
    store = CaseStore.open(RelationalSettings(), tmp_path)
    new = NewCase(type="bin_overflow", description="full")
    tags = {"grid": "FT-11", "district": "futian"}
    try:
        def routed(local: str) -> tuple[str | None, str | None, str, str | None]:
            now_ms = int(datetime.fromisoformat(f"2026-12-07T{local}+08:00").timestamp() * 1000)
            case = CaseService(store, CaseRouter(settings, "Asia/Shanghai"), now_ms=lambda: now_ms).routed(
                new, tags)
            return case.department, case.category, case.priority, case.grid

        assert routed("21:59") == ("sanitation", "0101", "high", "FT-11")
        assert routed("22:00") == ("sanitation-night", "0101", "normal", "FT-11")
        assert routed("05:30") == ("sanitation-night", "0101", "normal", "FT-11")
    finally:
        store.close()
