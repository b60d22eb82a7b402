"""Typos are refused, never taken as success: unknown query parameters and violation types answer 422
with the closest valid name (real SQLite store, in-process API)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.services import ApiServices
from api.violation_types import default_violation_types
from core.metrics import Metrics
from store.sqlite_store import SqliteStore
from tests.support.alerts import violation

RANGE = {"from": "2025-11-26T00:00:00Z", "to": "2025-11-27T00:00:00Z"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = SqliteStore.in_directory(tmp_path)
    # "parking": a type no rule emits, as a smart camera may report it.
    store.write_violations([violation(1, type="bin_overflow"), violation(2, type="parking")])
    store.flush()
    with TestClient(create_app(ApiServices(store=store, metrics=Metrics()))) as client:
        yield client
    store.close()


def errors(response: object) -> list[tuple[str, str, str | None]]:
    body = response.json()  # type: ignore[attr-defined]
    return [(e["location"], e["field"], e.get("closest")) for e in body["errors"]]


@pytest.mark.parametrize(("path", "params", "closest"), [
    ("/v1/violations", {}, "limit"),
    ("/v1/violations/v0001", {}, None),
    ("/v1/events", {}, "limit"),
    ("/v1/dead-letters", {}, "limit"),
    ("/v1/aggregates/violations", {"bucket": "hour", **RANGE}, None),
    ("/v1/aggregates/violations/top", RANGE, "limit"),
    ("/v1/readings/latest", {"kind": "bin"}, "limit"),
    ("/v1/readings/bin-1/series", {"attribute": "fill_pct", **RANGE}, "limit"),
    ("/v1/exports/violations.csv", {}, "limit"),
    ("/v1/bins/predictions", {}, "limit"),
])
def test_an_unknown_query_parameter_is_refused_with_the_closest_one(client, path, params, closest) -> None:
    assert client.get(path, params=params).status_code == 200
    response = client.get(path, params={**params, "limt": "5"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "urn:citywatch:problem:invalid-input"
    if closest is None:
        assert body["errors"] == [{"location": "query", "field": "limt", "message": "unknown parameter"}]
    else:
        assert body["errors"] == [{"location": "query", "field": "limt", "closest": closest,
                                   "message": f"unknown parameter; did you mean `{closest}`?"}]


def test_every_unknown_parameter_is_named_and_a_far_one_gets_no_suggestion(client) -> None:
    response = client.get("/v1/violations", params={"typ": "bin_overflow", "zzz": "1", "status": "open"})
    assert errors(response) == [("query", "typ", "type"), ("query", "zzz", None)]
    assert response.json()["detail"] == ("query `typ`: unknown parameter; did you mean `type`?; "
                                         "query `zzz`: unknown parameter")


def test_health_endpoints_ignore_query_parameters(client) -> None:
    # Probes and scrapers add their own parameters; only the /v1 API is strict.
    assert client.get("/healthz", params={"verbose": "1"}).status_code == 200
    assert client.get("/readyz", params={"verbose": "1"}).status_code == 200


def test_a_misspelt_violation_type_is_refused_with_the_closest_type(client) -> None:
    for path, params in (("/v1/violations", {}), ("/v1/exports/violations.csv", {}),
                         ("/v1/aggregates/violations", {"bucket": "day", **RANGE})):
        response = client.get(path, params={**params, "type": ["bin_overflow", "bin_overflw"]})
        assert response.status_code == 422, path
        [error] = response.json()["errors"]
        assert error == {"location": "query", "field": "type", "closest": "bin_overflow",
                         "message": "unknown violation type `bin_overflw`; did you mean `bin_overflow`?"}


def test_known_types_are_those_of_the_rules_and_those_stored(client) -> None:
    assert {"bin_overflow", "illegal_parking", "red_light", "sensor_stuck", "camera_violation"} <= (
        default_violation_types())
    parking = client.get("/v1/violations", params={"type": "parking"}).json()["items"]
    ids = [v["violation_id"] for v in parking]
    assert ids == ["v0002"]  # a camera's own type: stored, so known
    nothing = client.get("/v1/violations", params={"type": "red_light"})  # a rule's type, none stored yet
    assert nothing.status_code == 200 and nothing.json()["items"] == []
    far = client.get("/v1/violations", params={"type": "xyzzy"})
    assert errors(far) == [("query", "type", None)]
    assert far.json()["errors"][0]["message"] == "unknown violation type `xyzzy`"


def test_a_misspelt_enum_value_gets_the_closest_value(client) -> None:
    assert errors(client.get("/v1/violations", params={"severity": "hgh"})) == [("query", "severity", "high")]
    assert errors(client.get("/v1/violations", params={"status": "opne"})) == [("query", "status", "open")]
    top = client.get("/v1/aggregates/violations/top", params={"by": "intersecton", **RANGE})
    assert errors(top) == [("query", "by", "intersection")]
