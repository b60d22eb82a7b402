"""The query API over HTTP: parameters, validation, exports, OpenAPI; on both backends."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from api.app import create_app
from api.services import ApiServices
from core.metrics import Metrics
from core.models import ViolationStatus
from store import buckets
from tests.support.api_server import serve
from tests.support.influxdb import InfluxServer
from tests.support.query_data import SPAN_MS, T0, VIOLATIONS, load
from tests.support.stores import open_store

pytestmark = pytest.mark.integration


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module", params=["embedded", "influxdb"])
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, influx_server: InfluxServer
) -> Iterator[httpx.Client]:
    store = load(open_store(request.param, tmp_path_factory.mktemp(request.param), influx_server))
    with serve(create_app(ApiServices(store=store, metrics=Metrics()))) as test_client:
        yield test_client
    store.close()


def newest_first_ids(predicate: object) -> list[str]:
    chosen = [v for v in VIOLATIONS if predicate(v)]  # type: ignore[operator]
    return [
        v.violation_id for v in sorted(chosen, key=lambda v: (v.start_time_ms, v.violation_id), reverse=True)
    ]


def test_list_with_tag_filters_and_bbox(client: httpx.Client) -> None:
    response = client.get(
        "/v1/violations",
        params={
            "district": "nanshan",
            "severity": ["high", "critical"],
            "bbox": "113.5,22.0,114.5,23.0",
            "limit": 1000,
        },
    )
    assert response.status_code == 200
    assert [v["violation_id"] for v in response.json()["items"]] == newest_first_ids(
        lambda v: (
            v.tags["district"] == "nanshan"
            and v.severity.value in ("high", "critical")
            and v.location is not None
        )
    )


def test_open_at_and_paging(client: httpx.Client) -> None:
    at = T0 + 10 * buckets.DAY_MS
    seen: list[str] = []
    params: dict[str, object] = {"open_at": iso(at), "limit": 4}
    while True:
        body = client.get("/v1/violations", params=params).json()
        seen += [v["violation_id"] for v in body["items"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == newest_first_ids(
        lambda v: v.start_time_ms <= at and (v.end_time_ms is None or v.end_time_ms > at)
    )


def test_csv_export(client: httpx.Client) -> None:
    response = client.get("/v1/exports/violations.csv", params={"status": "open", "type": "bin_overflow"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["violation_id"] for r in rows] == newest_first_ids(
        lambda v: v.status is ViolationStatus.OPEN and v.type == "bin_overflow"
    )
    first = next(v for v in VIOLATIONS if v.violation_id == rows[0]["violation_id"])
    assert rows[0]["grid"] == first.tags["grid"] and rows[0]["end_time_ms"] == ""


def test_geojson_export(client: httpx.Client) -> None:
    response = client.get("/v1/exports/violations.geojson", params={"grid": "NS-02", "limit": 30})
    assert response.status_code == 200
    collection = response.json()
    assert collection["type"] == "FeatureCollection"
    expected = newest_first_ids(lambda v: v.tags["grid"] == "NS-02")[:30]
    assert [f["id"] for f in collection["features"]] == expected
    by_id = {v.violation_id: v for v in VIOLATIONS}
    for f in collection["features"]:
        location = by_id[f["id"]].location
        assert f["geometry"] == (
            None if location is None else {"type": "Point", "coordinates": [location.lon, location.lat]}
        )


def test_counts_endpoint(client: httpx.Client) -> None:
    response = client.get(
        "/v1/aggregates/violations",
        params={
            "from": iso(T0 + 1000),
            "to": iso(T0 + 14 * buckets.DAY_MS),
            "bucket": "week",
            "group_by": ["district", "type"],
            "department": "traffic",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["from_ms"] == T0 and body["to_ms"] == T0 + 14 * buckets.DAY_MS
    total = sum(row["count"] for row in body["rows"])
    assert total == sum(
        1
        for v in VIOLATIONS
        if v.tags["department"] == "traffic" and T0 <= v.start_time_ms < T0 + 14 * buckets.DAY_MS
    )
    assert {tuple(row["group"]) for row in body["rows"]} == {("district", "type")}


def test_top_intersections(client: httpx.Client) -> None:
    body = client.get(
        "/v1/aggregates/violations/top",
        params={"from": iso(T0), "to": iso(T0 + SPAN_MS), "by": "intersection"},
    ).json()
    assert [row["key"] for row in body["rows"]] == ["X-2", "X-1"]


def test_readings_endpoints(client: httpx.Client) -> None:
    latest = client.get("/v1/readings/latest", params={"kind": "bin", "attribute": "fill_pct"}).json()
    assert [e["device_id"] for e in latest["items"]] == ["bin-1", "bin-2", "bin-3"]
    series = client.get(
        "/v1/readings/bin-1/series",
        params={"attribute": "fill_pct", "from": iso(T0), "to": iso(T0 + buckets.DAY_MS), "bucket": "hour"},
    ).json()
    assert series["buckets"] and series["points"] == []
    assert all(b["min"] <= b["mean"] <= b["max"] for b in series["buckets"])


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/v1/violations", {"bbox": "1,2,3"}, "bbox"),
        ("/v1/violations", {"bbox": "10,50,5,60"}, "bbox"),
        ("/v1/violations", {"severity": "urgent"}, "severity"),
        ("/v1/violations", {"open_at": "2026-11-26T08:00:00"}, "timezone"),
        ("/v1/violations", {"limit": 5000}, "limit"),
        ("/v1/aggregates/violations", {"bucket": "hour"}, "from"),
        (
            "/v1/aggregates/violations",
            {"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z", "bucket": "day"},
            "earlier",
        ),
        (
            "/v1/aggregates/violations",
            {"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z", "bucket": "minute"},
            "buckets",
        ),
        (
            "/v1/aggregates/violations",
            {"from": "2020-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z", "bucket": "month"},
            "366 days",
        ),
        (
            "/v1/aggregates/violations",
            {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "bucket": "fortnight"},
            "bucket",
        ),
        (
            "/v1/aggregates/violations",
            {
                "from": "2026-11-01T00:00:00Z",
                "to": "2026-11-02T00:00:00Z",
                "bucket": "day",
                "group_by": "plate",
            },
            "group_by",
        ),
        (
            "/v1/aggregates/violations/top",
            {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "limit": 1000},
            "limit",
        ),
        (
            "/v1/readings/bin-1/series",
            {"attribute": "fill pct; drop", "from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"},
            "attribute",
        ),
        ("/v1/readings/latest", {}, "kind"),
    ],
)
def test_bad_parameters_answer_422_naming_the_problem(
    client: httpx.Client, path: str, params: dict[str, object], message: str
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert message in response.text


@pytest.mark.parametrize(("path", "params"), [
    ("/v1/violations", {"cursor": "garbage"}),
    ("/v1/violations", {"cursor": ""}),
    ("/v1/events", {"cursor": "garbage"}),
    ("/v1/events", {"cursor": ""}),
])
def test_a_bad_or_empty_cursor_answers_422_naming_it(client: httpx.Client, path: str,
                                                      params: dict[str, str]) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 422
    assert [(e["location"], e["field"]) for e in response.json()["errors"]] == [("query", "cursor")]


def test_a_misspelt_violation_type_is_refused_on_both_stores(client: httpx.Client) -> None:
    response = client.get("/v1/violations", params={"type": "red_lihgt"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["closest"] == "red_light"


def test_every_query_endpoint_is_documented_with_examples(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for path in (
        "/v1/violations",
        "/v1/aggregates/violations",
        "/v1/aggregates/violations/top",
        "/v1/readings/latest",
        "/v1/readings/{device_id}/series",
        "/v1/exports/violations.csv",
        "/v1/exports/violations.geojson",
    ):
        operation = spec["paths"][path]["get"]
        assert operation["summary"]
        assert any("examples" in p for p in operation["parameters"]) or "example" in str(
            operation["responses"]
        )
