"""InfluxDB down under the API: queries answer 503 with Retry-After and a problem body, each logged in one
line without a traceback, and answers come back when InfluxDB does. The test stops its own real influxd."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from api.app import create_app
from api.services import ApiServices
from core.metrics import Metrics
from store.base import Store
from tests.support.alerts import violation
from tests.support.events import reading
from tests.support.influxdb import InfluxServer
from tests.support.stores import open_store, settle

pytestmark = pytest.mark.integration

QUERIES = (
    "/v1/violations",
    "/v1/events",
    "/v1/aggregates/violations?bucket=hour&from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z",
    "/v1/readings/latest?kind=bin",
)


@pytest.fixture
def server(own_influx_server: InfluxServer) -> InfluxServer:
    return own_influx_server


@pytest.fixture
def store(server: InfluxServer, tmp_path: Path) -> Iterator[Store]:
    store = open_store("influxdb", tmp_path, server, timeout_s=2)
    store.write_events([reading("bin-1", 0, fill_pct=10)])
    store.write_violations([violation(1)])
    settle(store)
    yield store
    store.close()


def test_queries_answer_503_with_retry_after_while_influxdb_is_down(
    server: InfluxServer, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(ApiServices(store=store, metrics=Metrics()))) as client:
        document = client.get("/openapi.json").json()
        assert [client.get(path).status_code for path in QUERIES] == [200] * len(QUERIES)

        server.stop()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="api"):
            for path in QUERIES:
                response = client.get(path)
                assert response.status_code == 503, (path, response.text)
                assert response.headers["retry-after"] == "5"
                assert response.headers["content-type"] == "application/problem+json"
                body = response.json()
                assert body["type"] == "urn:citywatch:problem:store-unavailable"
                assert body["detail"] == "the store cannot be reached; retry after 5 s"
                declared = document["paths"][path.split("?")[0]]["get"]["responses"]["503"]
                schema = declared["content"]["application/problem+json"]["schema"]
                Draft202012Validator({**schema, "components": document["components"]}).validate(body)
        api_records = [r for r in caplog.records if r.name.startswith("api.")]
        assert len(api_records) == len(QUERIES)
        for record, path in zip(api_records, QUERIES, strict=True):
            message = record.getMessage()
            assert record.levelno == logging.WARNING and record.exc_info is None and "\n" not in message
            assert message.startswith(f"GET {path.split('?')[0]} answered 503: InfluxDB at ")

        server.start()
        assert [client.get(path).status_code for path in QUERIES] == [200] * len(QUERIES)
