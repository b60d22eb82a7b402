"""InfluxDB down or slow: writes wait in memory, then on disk, nothing is lost, and past the bound the
writer pushes back. Each test stops and restarts its own real influxd."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from citywatch.metrics import Metrics
from citywatch.models import Event
from citywatch.settings import InfluxDBSettings
from store.influx_store import InfluxQueryError, InfluxStore
from store.influx_writer import StoreBackpressure
from tests.support.influxdb import InfluxServer
from tests.support.stores import KEEP_ALL
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InfluxServer]:
    (tmp_path / "influxd").mkdir()
    server = InfluxServer(tmp_path / "influxd").start()
    yield server
    server.stop()


def events(start: int, count: int) -> list[Event]:
    return [
        Event(
            event_id=f"e{n}",
            device_id=f"bin-{n % 7}",
            kind="bin",
            event_time_ms=T0 + n * 1000,
            ingest_time_ms=T0 + n * 1000,
            attributes={"fill_pct": n % 100},
        )
        for n in range(start, start + count)
    ]


def make_store(server: InfluxServer, data_dir: Path, database: str, **overrides: object) -> InfluxStore:
    settings = InfluxDBSettings.model_validate(
        {
            "url": server.url,
            "database": database,
            "flush_interval_ms": 20,
            "retry_min_s": 0.05,
            "retry_max_s": 0.3,
            "flush_wait_s": 0.2,
            "timeout_s": 2,
            **overrides,
        }
    )
    store = InfluxStore(settings, data_dir, KEEP_ALL, metrics=Metrics())
    store.start()
    return store


def stored_events(server: InfluxServer, database: str) -> int:
    result = server.query(database, 'SELECT count(event_id) FROM "raw"."readings"')
    series = result["results"][0].get("series")  # type: ignore[index]
    return 0 if not series else int(series[0]["values"][0][1])


def gauge(store: InfluxStore, name: str) -> float:
    value = store.metrics.registry.get_sample_value(name)
    assert value is not None
    return value


def test_an_outage_mid_stream_loses_nothing(server: InfluxServer, tmp_path: Path) -> None:
    database = f"outage_{uuid.uuid4().hex[:8]}"
    store = make_store(server, tmp_path / "data", database, memory_buffer_points=300, batch_points=100)
    try:
        for batch in range(3):
            store.write_events(events(batch * 200, 200))
            store.flush()
        server.stop()
        for batch in range(3, 7):
            store.write_events(events(batch * 200, 200))
            store.flush()  # returns: InfluxDB is down, so the batch is spooled to disk (durable)
        assert gauge(store, "citywatch_store_spool_bytes") > 0
        assert gauge(store, "citywatch_store_write_retries_total") > 0
        with pytest.raises(InfluxQueryError):
            store.ping()
        server.start()
        for batch in range(7, 10):
            store.write_events(events(batch * 200, 200))
            store.flush()
        store.wait_until_sent()
        assert gauge(store, "citywatch_store_spool_bytes") == 0
        assert gauge(store, "citywatch_store_buffer_points") == 0
        assert stored_events(server, database) == 2000
        store.ping()
    finally:
        store.close()


def test_past_the_bound_writes_fail_with_a_typed_error_and_what_was_accepted_arrives(
    server: InfluxServer, tmp_path: Path
) -> None:
    database = f"bound_{uuid.uuid4().hex[:8]}"
    store = make_store(
        server,
        tmp_path / "data",
        database,
        memory_buffer_points=100,
        batch_points=50,
        disk_buffer_bytes=30_000,
        backpressure_timeout_s=0.3,
    )
    try:
        store.write_events(events(0, 50))
        store.wait_until_sent()
        server.stop()
        accepted = 50
        with pytest.raises(StoreBackpressure, match="buffer full"):
            for n in range(1, 1000):
                store.write_events(events(n * 50, 50))  # one chunk per call: all or nothing
                accepted += 50
                store.flush()
        assert accepted < 50_000
        server.start()
        store.wait_until_sent()
        assert stored_events(server, database) == accepted
    finally:
        store.close()


def test_a_full_buffer_blocks_the_writer_until_influxdb_is_back(server: InfluxServer, tmp_path: Path) -> None:
    database = f"block_{uuid.uuid4().hex[:8]}"
    store = make_store(
        server, tmp_path / "data", database, memory_buffer_points=100, batch_points=50, disk_buffer_bytes=0
    )
    server.stop()
    done = threading.Event()

    def produce() -> None:
        for n in range(10):
            store.write_events(events(n * 50, 50))
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_for(lambda: gauge(store, "citywatch_store_backpressure") == 1, 10, 0.02, "the writer to block")
        assert not done.is_set()
        server.start()
        assert done.wait(30)
        store.wait_until_sent()
        assert stored_events(server, database) == 500
    finally:
        producer.join(30)
        store.close()


def test_the_spool_survives_a_restart_of_citywatch(server: InfluxServer, tmp_path: Path) -> None:
    database = f"spool_{uuid.uuid4().hex[:8]}"
    store = make_store(server, tmp_path / "data", database)
    store.write_events(events(0, 10))
    store.wait_until_sent()
    server.stop()
    store.write_events(events(10, 300))
    store.flush()
    store.close()
    assert list((tmp_path / "data" / "influx-spool").glob("*.lp"))
    server.start()
    again = make_store(server, tmp_path / "data", database)
    try:
        again.wait_until_sent()
        assert stored_events(server, database) == 310
        assert not list((tmp_path / "data" / "influx-spool").glob("*.lp"))
    finally:
        again.close()
