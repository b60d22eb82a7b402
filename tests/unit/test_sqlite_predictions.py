"""Predictions in the embedded store: newest per device, soonest first (the API is tested end to end)."""

from __future__ import annotations

import pathlib
import sqlite3

from core.models import Location, Prediction
from store.sqlite_store import FILE_NAME, SqliteStore


def forecast(device_id, computed_ms, predicted_ms, fill=50.0):
    return Prediction(type="bin_full", device_id=device_id, computed_time_ms=computed_ms,
                      predicted_time_ms=predicted_ms, value=fill, details={"points": 5},
                      location=Location(22.5, 114.0), tags={"grid": "FT-11"})


def test_newest_forecast_per_bin_wins_and_soonest_comes_first(tmp_path: pathlib.Path):
    store = SqliteStore.in_directory(tmp_path)
    try:
        store.write_predictions([forecast("bin-a", 100, 9000), forecast("bin-b", 100, 5000),
                                 forecast("bin-c", 100, None)])
        store.write_predictions([forecast("bin-a", 200, 4000, fill=80)])
        store.write_predictions([forecast("bin-b", 50, 1)])  # older readings: ignored (replay)
        store.flush()
        got = store.query_predictions("bin_full")
        assert [(p.device_id, p.predicted_time_ms) for p in got] == [
            ("bin-a", 4000), ("bin-b", 5000), ("bin-c", None)]
        assert got[0] == forecast("bin-a", 200, 4000, fill=80)
        assert store.query_predictions("other") == []
    finally:
        store.close()


def test_a_store_created_before_predictions_existed_gains_the_table(tmp_path: pathlib.Path):
    SqliteStore.in_directory(tmp_path).close()
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        conn.execute("DROP TABLE predictions")
    store = SqliteStore.in_directory(tmp_path)
    try:
        assert store.query_predictions("bin_full") == []
    finally:
        store.close()
