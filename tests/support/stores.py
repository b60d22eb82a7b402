"""Both store backends behind one fixture-friendly constructor, so one test suite runs against each."""

from __future__ import annotations

import uuid
from pathlib import Path

from core.metrics import Metrics
from core.settings import InfluxDBSettings
from store.base import RetentionPolicy, Store
from store.influx_store import InfluxStore
from store.sqlite_store import SqliteStore
from tests.support.influxdb import InfluxServer

# Long enough that test data near "now" is never expired.
KEEP_ALL = RetentionPolicy(
    raw_readings_days=3650, rollup_days=3650, violations_days=3650, dead_letters_days=3650
)


def open_store(
    kind: str, tmp_path: Path, influx: InfluxServer | None = None, **influx_settings: object
) -> Store:
    if kind == "embedded":
        return SqliteStore.in_directory(tmp_path / "data", KEEP_ALL)
    assert influx is not None
    settings = InfluxDBSettings.model_validate(
        {
            "url": influx.url,
            "database": f"test_{uuid.uuid4().hex[:12]}",
            "flush_interval_ms": 20,
            "retry_min_s": 0.05,
            "retry_max_s": 0.5,
            **influx_settings,
        }
    )
    store = InfluxStore(settings, tmp_path / "data", KEEP_ALL, metrics=Metrics())
    store.start()
    return store


def settle(store: Store) -> None:
    """Make every write visible to queries (InfluxDB acknowledges asynchronously)."""
    store.flush()
    if isinstance(store, InfluxStore):
        store.wait_until_sent()
