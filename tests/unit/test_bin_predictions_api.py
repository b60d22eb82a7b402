"""GET /v1/bins/predictions over a real SQLite store: the bins to empty first at the top."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.services import ApiServices
from core.metrics import Metrics
from core.models import Location, Prediction
from store.sqlite_store import SqliteStore


def forecast(device_id: str, predicted_ms: int | None, fill: float = 50.0) -> Prediction:
    return Prediction(type="bin_full", device_id=device_id, computed_time_ms=100,
                      predicted_time_ms=predicted_ms, value=fill, details={"points": 5},
                      location=Location(22.5, 114.0), tags={"grid": "FT-11"})


def test_bins_to_empty_first_are_listed_first(tmp_path: Path) -> None:
    store = SqliteStore.in_directory(tmp_path)
    store.write_predictions([forecast("bin-a", 9000), forecast("bin-b", 5000, fill=88.5),
                             forecast("bin-c", None)])
    store.flush()
    try:
        with TestClient(create_app(ApiServices(store=store, metrics=Metrics()))) as client:
            body = client.get("/v1/bins/predictions").json()
            limited = client.get("/v1/bins/predictions", params={"limit": 1}).json()
            bad = client.get("/v1/bins/predictions", params={"limit": 0})
    finally:
        store.close()
    assert [item["device_id"] for item in body["items"]] == ["bin-b", "bin-a", "bin-c"]
    first = body["items"][0]
    assert first["predicted_full_time_ms"] == 5000 and first["fill_pct"] == 88.5
    assert first["location"] == {"lat": 22.5, "lon": 114.0} and first["tags"] == {"grid": "FT-11"}
    assert body["items"][2]["predicted_full_time_ms"] is None
    assert [item["device_id"] for item in limited["items"]] == ["bin-b"]
    assert bad.status_code == 422
