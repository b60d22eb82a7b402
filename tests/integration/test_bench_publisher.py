"""The benchmark publisher against a real Mosquitto: more QoS 1 messages than paho has packet ids."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
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


@pytest.mark.parametrize("client", ["paho", "c"])
def test_a_paced_run_sends_every_reading_with_its_device_and_send_time(mosquitto_url: str,
                                                                       client: str) -> None:
    readings: list[dict] = []
    subscriber = connect_client(mosquitto_url)
    subscribed = threading.Event()
    subscriber.on_message = lambda client, userdata, message: readings.append(json.loads(message.payload))
    subscriber.on_subscribe = lambda *args: subscribed.set()
    subscriber.subscribe("citywatch/events/#", qos=1)
    assert subscribed.wait(10)
    try:
        started_ns = time.time_ns()
        result = subprocess.run([sys.executable, "-m", "bench.publisher", "--url", mosquitto_url, "--events",
                                 "600", "--rate", "2000", "--devices", "50", "--client", client,
                                 "--client-id", f"test-paced-{client}"],
                                check=True, capture_output=True, text=True, timeout=60)
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        wait_for(lambda: len(readings) >= 600, 30, message="600 readings at the subscriber")
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()
    assert summary["published"] == 600 and summary["elapsed_s"] >= 0.25  # paced: 600 at 2,000/s
    assert sorted(r["attributes"]["seq"] for r in readings) == list(range(600))
    assert {r["device_id"] for r in readings} == {f"bench-{n:05d}" for n in range(50)}
    sent_ns = [r["attributes"]["sent_ns"] for r in sorted(readings, key=lambda r: r["attributes"]["seq"])]
    assert sent_ns == sorted(sent_ns) and sent_ns[0] >= started_ns
