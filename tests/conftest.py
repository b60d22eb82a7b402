"""Shared fixtures: a real Mosquitto, InfluxDB and PostgreSQL (system packages), connected MQTT test clients.

Integration tests never skip for a missing broker: a green run must mean the tests ran. `make test`
installs mosquitto before running pytest.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import pytest

from core.settings import EmbeddedBrokerKind, PostgresSettings, RelationalKind, RelationalSettings
from ingest.embedded_broker import EmbeddedBroker, find_mosquitto
from tests.support.influxdb import InfluxServer, find_influxd
from tests.support.postgres import PostgresServer, find_pg_bin
from tests.support.tansu import TansuBroker

MosquittoFactory = Callable[..., EmbeddedBroker]
PublisherFactory = Callable[[str], mqtt.Client]


def _require_mosquitto() -> None:
    if find_mosquitto() is None:
        pytest.fail(
            "the mosquitto broker is not installed; run `make test`, which installs it "
            "(or: apt-get install -y mosquitto)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def mosquitto_url() -> Iterator[str]:
    """One Mosquitto for the whole session on a free port; tests keep apart by topic prefix."""
    _require_mosquitto()
    broker = EmbeddedBroker(kind=EmbeddedBrokerKind.MOSQUITTO)
    url = broker.start()
    yield url
    broker.stop()


@pytest.fixture
def mosquitto_factory() -> Iterator[MosquittoFactory]:
    """Dedicated Mosquitto instances for tests that stop, restart or configure their broker."""
    _require_mosquitto()
    started: list[EmbeddedBroker] = []

    def start(port: int = 0, password_file: Path | None = None) -> EmbeddedBroker:
        broker = EmbeddedBroker(kind=EmbeddedBrokerKind.MOSQUITTO, port=port, password_file=password_file)
        broker.start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix no other test uses, so tests sharing a broker never see each other's messages."""
    return f"test/{uuid.uuid4().hex[:12]}"


def connect_client(url: str, client_id: str | None = None, timeout_s: float = 10.0) -> mqtt.Client:
    """A paho client connected to `url` with its network loop running."""
    parsed = urlparse(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{uuid.uuid4().hex}")
    connected = threading.Event()

    def on_connect(client: mqtt.Client, userdata: object, flags: object, reason: object,
                   properties: object) -> None:
        connected.set()

    client.on_connect = on_connect
    # Short retry waits: paho sleeps up to the reconnect delay before noticing a stop, which would
    # slow the teardown of tests that kill the broker under this client.
    client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
    client.connect(parsed.hostname or "127.0.0.1", parsed.port or 1883)
    client.loop_start()
    if not connected.wait(timeout_s):
        client.loop_stop()
        raise AssertionError(f"test client could not connect to {url} within {timeout_s} s")
    return client


@pytest.fixture
def mqtt_publisher() -> Iterator[PublisherFactory]:
    """`mqtt_publisher(url)` gives a connected client; publish with `.publish(...).wait_for_publish(5)`."""
    clients: list[mqtt.Client] = []

    def connect(url: str) -> mqtt.Client:
        client = connect_client(url)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.disconnect()
        client.loop_stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real Kafka-protocol broker (Tansu) for the session; tests keep apart by topic and group."""
    broker = TansuBroker(Path(tmp_path_factory.mktemp("tansu")) / "tansu.log").start()
    yield broker.bootstrap
    broker.stop()


@pytest.fixture(scope="session")
def influx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """One real influxd for the session; tests keep apart by database name."""
    if find_influxd() is None:
        pytest.fail("influxd is not installed; run `make test`, which installs it "
                    "(or: apt-get install -y influxdb)", pytrace=False)
    server = InfluxServer(tmp_path_factory.mktemp("influxd")).start()
    yield server
    server.stop()


@pytest.fixture
def own_influx_server(tmp_path: Path) -> Iterator[InfluxServer]:
    """An influxd of this test's own, which the test may stop and start (outages)."""
    (tmp_path / "influxd").mkdir()
    server = InfluxServer(tmp_path / "influxd").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the session; each test takes a database of its own."""
    if find_pg_bin() is None:
        pytest.fail("PostgreSQL is not installed; run `make test`, which installs it "
                    "(or: apt-get install -y postgresql)", pytrace=False)
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.remove()


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> PostgresSettings:
    """Settings of a new, empty database on the session's PostgreSQL."""
    return postgres_server.create_database()


@pytest.fixture(params=[RelationalKind.SQLITE, RelationalKind.POSTGRESQL], ids=["sqlite", "postgresql"])
def relational(request: pytest.FixtureRequest) -> RelationalSettings:
    """Each backend of the relational state in turn: a test using this runs on SQLite and on PostgreSQL
    (an empty database of its own)."""
    if request.param is RelationalKind.SQLITE:
        return RelationalSettings()
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return RelationalSettings(kind=RelationalKind.POSTGRESQL, postgresql=server.create_database())
