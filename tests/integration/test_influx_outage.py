"""InfluxDB down or slow: writes wait in memory, then on disk, nothing is lost, and past the bound the
writer pushes back. Each test stops and restarts its own real influxd."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.services import ApiServices
from core.metrics import Metrics
from core.models import Event
from core.settings import InfluxDBSettings
from store.influx_store import InfluxQueryError, InfluxStore
from store.influx_writer import StoreBackpressure
from tests.support.influxdb import InfluxServer
from tests.support.stores import KEEP_ALL
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000


@pytest.fixture
def server(own_influx_server: InfluxServer) -> InfluxServer:
    return own_influx_server


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


OUTAGE_S = 120
WRITES_PER_S = 100


@pytest.mark.timeout(OUTAGE_S + 120)
def test_a_two_minute_outage_under_a_steady_feed_loses_nothing_and_queries_answer_503(
        server: InfluxServer, tmp_path: Path) -> None:
    """What a city sees when InfluxDB is down for two minutes while 100 readings a second keep coming:
    the API says 503 with Retry-After the whole time, the pipeline keeps taking writes, and every
    reading is there once InfluxDB is back."""
    database = f"long_{uuid.uuid4().hex[:8]}"
    store = make_store(server, tmp_path / "data", database)
    written = 0
    stop = threading.Event()

    def feed() -> None:  # 10 readings every 0.1 s, paced by the clock rather than by InfluxDB
        nonlocal written
        while not stop.wait(0.1):
            store.write_events(events(written, WRITES_PER_S // 10))
            written += WRITES_PER_S // 10

    feeder = threading.Thread(target=feed)
    try:
        with TestClient(create_app(ApiServices(store=store, metrics=Metrics()))) as client:
            feeder.start()
            wait_for(lambda: stored_events(server, database) > 0, 10, 0.1, "readings stored")
            server.stop()
            down_at = time.monotonic()
            statuses = []
            while time.monotonic() - down_at < OUTAGE_S:
                response = client.get("/v1/events", params={"limit": 1})
                statuses.append((response.status_code, response.headers.get("retry-after")))
                time.sleep(5)  # a dashboard's refresh, not a wait for a condition
            assert set(statuses) == {(503, "5")}, statuses
            held = gauge(store, "citywatch_store_spool_bytes") + gauge(store, "citywatch_store_buffer_points")
            assert held > 0  # what came during the outage waits in the store's buffers
            server.start()
            stop.set()
            feeder.join(10)
            store.flush()
            store.wait_until_sent()
            assert written >= (OUTAGE_S + 1) * WRITES_PER_S * 0.9  # the feed kept going through the outage
            assert stored_events(server, database) == written
            assert client.get("/v1/events", params={"limit": 1}).status_code == 200
    finally:
        stop.set()
        if feeder.is_alive():
            feeder.join(10)
        store.close()
