"""Both embedded brokers really broker: a subscriber gets what a publisher sends, and stop frees the port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from core.settings import EmbeddedBrokerKind
from ingest.embedded_broker import RUNNING_FILE, BrokerStartError, EmbeddedBroker, find_mosquitto, free_port
from ingest.mqtt_source import MqttSource
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


LEAVES_A_BROKER = """
import sys, time
from pathlib import Path
from ingest.embedded_broker import EmbeddedBroker
broker = EmbeddedBroker(kind="mosquitto", port=int(sys.argv[1]), state_dir=Path(sys.argv[2]))
print(broker.start(), flush=True)
time.sleep(600)
"""


def left_behind_by_a_killed_run(port: int, state_dir: Path) -> int:
    """Starts a run that records its Mosquitto in `state_dir` and kills it with SIGKILL, which it cannot
    stop its broker on; the broker's pid."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed; run `make test`, which installs it", pytrace=False)
    killed = subprocess.Popen([sys.executable, "-c", LEAVES_A_BROKER, str(port), str(state_dir)],
                              cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE)
    assert killed.stdout is not None and killed.stdout.readline().decode().strip().endswith(f":{port}")
    killed.kill()
    killed.wait(10)
    killed.stdout.close()
    left_pid = int((state_dir / RUNNING_FILE).read_text().split()[0])
    assert Path(f"/proc/{left_pid}").exists()  # still running, still on the port
    return left_pid


def test_a_broker_left_behind_by_a_killed_run_is_taken_over_with_what_it_queued(tmp_path: Path) -> None:
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    received: list[bytes] = []

    def session() -> MqttSource:
        return MqttSource(host="127.0.0.1", port=port, client_id="citywatch-ingest", topics=["t/#"],
                          reconnect_min_s=0.1, reconnect_max_s=0.5,
                          on_message=lambda topic, payload, received_ms: received.append(payload))

    left_pid = left_behind_by_a_killed_run(port, tmp_path)
    again = EmbeddedBroker(kind=EmbeddedBrokerKind.MOSQUITTO, port=port, state_dir=tmp_path)
    try:
        first = session()  # ingest's persistent session, as the killed run had it
        first.start()
        wait_for(lambda: first.subscribed, 5, message="subscription")
        first.stop()
        publisher = connect_client(url)
        publisher.publish("t/bin-1", b"published while citywatch was down", qos=1).wait_for_publish(5)
        publisher.loop_stop()
        publisher.disconnect()

        assert again.start() == url  # the same port: devices reach this run
        assert int((tmp_path / RUNNING_FILE).read_text().split()[0]) == left_pid  # taken over
        second = session()
        second.start()
        wait_for(lambda: received == [b"published while citywatch was down"], 5, message="the queued message")
        second.stop()
        again.stop()
        assert not Path(f"/proc/{left_pid}").exists() and not (tmp_path / RUNNING_FILE).exists()
    finally:
        again.stop()
        with contextlib.suppress(ProcessLookupError):
            os.kill(left_pid, signal.SIGKILL)


def test_a_broker_left_behind_with_another_configuration_is_stopped(tmp_path: Path) -> None:
    port = free_port()
    left_pid = left_behind_by_a_killed_run(port, tmp_path)
    passwords = tmp_path / "passwords"
    subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-c", "-b",
                    str(passwords), "citywatch", "secret"], check=True, capture_output=True)
    again = EmbeddedBroker(kind=EmbeddedBrokerKind.MOSQUITTO, port=port, state_dir=tmp_path,
                           password_file=passwords)
    try:
        assert again.start() == f"mqtt://127.0.0.1:{port}"
        assert not Path(f"/proc/{left_pid}").exists()
        assert int((tmp_path / RUNNING_FILE).read_text().split()[0]) != left_pid
    finally:
        again.stop()
        with contextlib.suppress(ProcessLookupError):
            os.kill(left_pid, signal.SIGKILL)


def test_the_broker_of_a_run_still_alive_is_left_alone(tmp_path: Path) -> None:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed; run `make test`, which installs it", pytrace=False)
    first = EmbeddedBroker(kind=EmbeddedBrokerKind.MOSQUITTO, state_dir=tmp_path)
    first.start()
    second = EmbeddedBroker(kind=EmbeddedBrokerKind.MOSQUITTO, state_dir=tmp_path)
    try:
        second.start()
        with socket.create_connection(("127.0.0.1", first.port), timeout=2):
            pass  # the first run's broker still answers
    finally:
        second.stop()
        first.stop()
