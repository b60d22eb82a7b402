"""The benchmark publisher against a real Mosquitto: more QoS 1 messages than paho has packet ids."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.publisher import WindowedPublisher
from citywatch.mqtt_publisher import MqttPublisher
from tests.conftest import connect_client
from tests.support.own_mosquitto import own_mosquitto
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

# paho numbers QoS 1 publishes with 16-bit packet ids (1-65,535): one run must go past them.
MESSAGES = 70_000
WINDOW = 5_000


@pytest.fixture
def paused_broker(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Mosquitto of this test's own, which the test pauses (SIGSTOP) so that no PUBACK comes back."""
    # The subscriber may fall behind while the publisher runs: the broker keeps every message for it.
    with own_mosquitto(tmp_path, f"max_queued_messages {2 * MESSAGES}\n") as (url, process):
        yield url, process
        process.send_signal(signal.SIGCONT)


def test_more_qos1_messages_than_packet_ids_all_arrive_with_at_most_a_window_outstanding(
        paused_broker: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, broker = paused_broker
    seen: set[int] = set()
    subscriber = connect_client(url)
    subscribed = threading.Event()
    subscriber.on_message = lambda client, userdata, message: seen.add(int(message.payload))
    subscriber.on_subscribe = lambda *args: subscribed.set()
    subscriber.subscribe("bench/window", qos=1)
    assert subscribed.wait(10)
    publisher = MqttPublisher(url, "test-windowed-publisher").connect()
    windowed = WindowedPublisher(publisher, WINDOW)
    failure: list[BaseException] = []

    def publish_all() -> None:
        try:
            for n in range(MESSAGES):
                windowed.publish("bench/window", str(n).encode())
            windowed.drain()
        except BaseException as exc:
            failure.append(exc)

    # Paused, the broker acknowledges nothing: without the window every message would be queued in
    # paho at once, and the 65,536th would find its packet id taken.
    broker.send_signal(signal.SIGSTOP)
    thread = threading.Thread(target=publish_all)
    try:
        thread.start()
        wait_for(lambda: windowed.outstanding == WINDOW, 30, message="the window to fill")
        time.sleep(1)
        assert windowed.outstanding == WINDOW  # it waits for acknowledgements instead of queueing more
        broker.send_signal(signal.SIGCONT)
        thread.join(90)
        assert not thread.is_alive() and not failure, failure
        wait_for(lambda: len(seen) == MESSAGES, 30, message=f"{MESSAGES} messages at the subscriber")
        assert seen == set(range(MESSAGES))
        assert windowed.most_outstanding == WINDOW
    finally:
        broker.send_signal(signal.SIGCONT)
        thread.join(90)
        publisher.close()
        subscriber.disconnect()
        subscriber.loop_stop()


def test_the_window_cannot_be_wider_than_the_packet_ids(mosquitto_url: str) -> None:
    publisher = MqttPublisher(mosquitto_url, "test-window-too-wide")
    with pytest.raises(ValueError, match="1-65,535 publishes"):
        WindowedPublisher(publisher, 65_536)


def test_a_publish_the_client_refuses_fails_the_run(mosquitto_url: str) -> None:
    publisher = MqttPublisher(mosquitto_url, "test-window-refused").connect()
    publisher.close()  # disconnected: paho refuses the publish instead of sending it
    with pytest.raises(RuntimeError, match="the MQTT client refused publish"):
        WindowedPublisher(publisher, 10).publish("bench/window", b"0")
