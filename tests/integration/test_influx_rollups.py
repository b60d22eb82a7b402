"""InfluxDB hourly rollups: computed from raw readings, idempotent, and what answers series older than the
raw retention."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from core.metrics import Metrics
from core.models import Event
from core.settings import InfluxApi, InfluxDBSettings
from store import buckets
from store.base import Bucket, ReadingSeriesQuery, RetentionPolicy
from store.influx_store import InfluxStore, _api_for_version
from store.influx_writer import V2Transport, WriteFailed
from tests.support.influxdb import InfluxServer

pytestmark = pytest.mark.integration

HOUR = buckets.HOUR_MS
NOW = 1_795_600_000_000 // HOUR * HOUR


def readings(start_ms: int, hours: int) -> list[Event]:
    return [
        Event(
            event_id=f"r{n}",
            device_id=f"bin-{n % 2}",
            kind="bin",
            event_time_ms=start_ms + n * 600_000,
            ingest_time_ms=start_ms,
            attributes={"fill_pct": (n * 7) % 100, "temperature_c": n % 30 - 5},
        )
        for n in range(hours * 6)
    ]


def test_rollups_answer_series_older_than_raw_retention(influx_server: InfluxServer, tmp_path: Path) -> None:
    settings = InfluxDBSettings(
        url=influx_server.url, database=f"rollup_{uuid.uuid4().hex[:8]}", flush_interval_ms=20
    )
    start = NOW - 3 * buckets.DAY_MS
    clock = {"now": NOW}
    # Raw readings kept 30 days here, so they are still there to compare the rollups with.
    keep = RetentionPolicy(raw_readings_days=30, rollup_days=365, violations_days=365, dead_letters_days=30)
    store = InfluxStore(settings, tmp_path, keep, metrics=Metrics(), now_ms=lambda: clock["now"])
    store.start()
    try:
        data = readings(start, 30)
        store.write_events(data)
        store.write_events(data[:40])  # a replay: rollups are recomputed from the (unchanged) raw hour
        store.wait_until_sent()
        assert store.compute_rollups() == 30
        store.wait_until_sent()
        query = ReadingSeriesQuery("bin-1", "fill_pct", start, start + 30 * HOUR, Bucket.HOUR, 1000)
        from_raw = store.reading_series(query)
        clock["now"] = NOW + 40 * buckets.DAY_MS  # the range is now older than raw retention: rollups answer
        from_rollups = store.reading_series(query)
        assert from_rollups == from_raw
        assert len(from_raw.buckets) == 30 and all(b.count == 3 for b in from_raw.buckets)
        daily = store.reading_series(
            ReadingSeriesQuery("bin-0", "temperature_c", start, start + 30 * HOUR, Bucket.DAY, 1000)
        )
        expected_total = sum(1 for e in data if e.device_id == "bin-0")
        assert sum(b.count for b in daily.buckets) == expected_total
        assert store.compute_rollups() == 0  # nothing written since
    finally:
        store.close()


@pytest.mark.parametrize(
    ("version", "api"),
    [
        ("1.6.7~rc0", InfluxApi.V1),
        ("1.7.10", InfluxApi.V1),
        ("1.8.10", InfluxApi.V2),
        ("v2.7.4", InfluxApi.V2),
        ("3.0.0", InfluxApi.V2),
        ("", InfluxApi.V1),
    ],
)
def test_the_write_api_follows_the_server_version(version: str, api: InfluxApi) -> None:
    assert _api_for_version(version) is api


def test_auto_detects_the_v1_api_of_the_installed_server(influx_server: InfluxServer, tmp_path: Path) -> None:
    store = InfluxStore(InfluxDBSettings(url=influx_server.url), tmp_path, RetentionPolicy(1, 1, 1, 1))
    assert store.api() is InfluxApi.V1


def test_retention_policies_follow_the_settings(influx_server: InfluxServer, tmp_path: Path) -> None:
    database = f"rp_{uuid.uuid4().hex[:8]}"
    policy = RetentionPolicy(raw_readings_days=7, rollup_days=400, violations_days=90, dead_letters_days=30)
    store = InfluxStore(InfluxDBSettings(url=influx_server.url, database=database), tmp_path, policy)
    store.apply_retention(NOW)
    changed = RetentionPolicy(
        raw_readings_days=14, rollup_days=400, violations_days=90, dead_letters_days=120
    )
    InfluxStore(
        InfluxDBSettings(url=influx_server.url, database=database), tmp_path, changed
    ).apply_retention(NOW)
    result = influx_server.query(database, f'SHOW RETENTION POLICIES ON "{database}"')
    rows = {row[0]: (row[1], row[4]) for row in result["results"][0]["series"][0]["values"]}  # type: ignore[index]
    assert rows["raw"] == ("336h0m0s", True)
    assert rows["violations"] == ("2880h0m0s", False)
    assert rows["rollup"] == ("9600h0m0s", False)


def test_the_v2_client_reaches_the_v2_endpoint_and_a_missing_one_is_retried(
    influx_server: InfluxServer,
) -> None:
    # InfluxDB 1.6 has no /api/v2/write: the 404 proves influxdb-client sent there, and it maps to "retry"
    # (a server being upgraded), never to dropping the batch. A 2.x server is not available to test against.
    transport = V2Transport(influx_server.url, "user:password", None, lambda rp: f"citywatch/{rp}", 5)
    try:
        with pytest.raises(WriteFailed, match="HTTP 404"):
            transport.write("raw", b"m,t=a f=1 1")
    finally:
        transport.close()
