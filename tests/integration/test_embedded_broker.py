"""Both embedded brokers really broker: a subscriber gets what a publisher sends, and stop frees the port."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from core.settings import EmbeddedBrokerKind
from ingest.embedded_broker import BrokerStartError, EmbeddedBroker, find_mosquitto, free_port
from tests.conftest import PublisherFactory, connect_client
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(params=[EmbeddedBrokerKind.MOSQUITTO, EmbeddedBrokerKind.AMQTT])
def broker(request: pytest.FixtureRequest) -> Iterator[EmbeddedBroker]:
    kind: EmbeddedBrokerKind = request.param
    if kind is EmbeddedBrokerKind.MOSQUITTO and find_mosquitto() is None:
        pytest.fail("mosquitto is not installed; run `make test`, which installs it", pytrace=False)
    embedded = EmbeddedBroker(kind=kind)
    embedded.start()
    yield embedded
    embedded.stop()


def subscribe(url: str, topic: str) -> tuple[mqtt.Client, list[bytes]]:
    """A client subscribed to `topic` (SUBACK received) and the list its messages land in."""
    received: list[bytes] = []
    acknowledged = threading.Event()
    client = connect_client(url)
    client.on_message = lambda client, userdata, message: received.append(message.payload)
    client.on_subscribe = lambda client, userdata, mid, codes, properties: acknowledged.set()
    client.subscribe(topic, qos=1)
    assert acknowledged.wait(5), "no SUBACK"
    return client, received


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_embedded_broker_delivers_a_publish_to_a_subscriber(
    broker: EmbeddedBroker, topic_prefix: str, mqtt_publisher: PublisherFactory
) -> None:
    assert broker.kind_used is broker.kind
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}" and broker.port > 0
    subscriber, received = subscribe(broker.url, f"{topic_prefix}/#")
    try:
        publisher = mqtt_publisher(broker.url)
        for index in range(3):
            publisher.publish(f"{topic_prefix}/d/{index}", f"m{index}".encode(), qos=1).wait_for_publish(5)
        wait_for(lambda: sorted(received) == [b"m0", b"m1", b"m2"], 5, message="three messages")
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()


def test_stop_closes_the_port(broker: EmbeddedBroker) -> None:
    port = broker.port
    # Probed with an MQTT client, not a bare TCP connect: amqtt 0.12 never closes the server side of a
    # connection that sends no CONNECT (a ResourceWarning at garbage collection).
    client = connect_client(broker.url)
    client.disconnect()
    client.loop_stop()
    broker.stop()
    assert not accepts_connections(port)
    broker.stop()  # idempotent


@pytest.mark.parametrize("kind", [EmbeddedBrokerKind.MOSQUITTO, EmbeddedBrokerKind.AMQTT])
def test_a_busy_port_fails_start_with_a_clear_error(kind: EmbeddedBrokerKind) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        embedded = EmbeddedBroker(kind=kind, port=port, startup_timeout_s=5)
        with pytest.raises(BrokerStartError, match=f"127.0.0.1:{port}") as caught:
            embedded.start()
    assert "already in use" in str(caught.value)
    assert embedded.kind_used is None


def test_auto_prefers_mosquitto_when_installed() -> None:
    embedded = EmbeddedBroker(kind="auto", port=free_port())
    try:
        embedded.start()
        expected = EmbeddedBrokerKind.MOSQUITTO if find_mosquitto() else EmbeddedBrokerKind.AMQTT
        assert embedded.kind_used is expected
    finally:
        embedded.stop()


def test_password_file_needs_mosquitto(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mosquitto"):
        EmbeddedBroker(kind="amqtt", password_file=tmp_path / "passwords").start()
