"""Every MQTT client citywatch runs gives back all its sockets when it stops, not when the garbage collector
gets round to it: a restarted output or a long simulator run must not hold file descriptors it no longer
uses. Counted from /proc with the cyclic collector off, since each of these refers to its paho client and
back, so only the collector would ever close what stop left open."""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import pytest

from citywatch.mqtt_publisher import MqttPublisher
from core.settings import MqttOutputSettings
from ingest.mqtt_source import MqttSource
from processors.outputs.feed import ViolationFeed
from processors.outputs.mqtt_out import MqttViolationOutput
from tests.support.alerts import violation
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_cyclic_collection() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def descriptors_left_open(run: Callable[[], None]) -> int:
    before = open_descriptors()
    run()
    return open_descriptors() - before


@pytest.mark.usefixtures("no_cyclic_collection")
def test_the_publisher_closes_every_socket(mosquitto_url: str) -> None:
    def publish_and_close() -> None:
        publisher = MqttPublisher(mosquitto_url, f"pub-{uuid.uuid4().hex[:8]}").connect()
        publisher.publish("release/test", b"{}", wait=True)
        publisher.close()

    assert descriptors_left_open(publish_and_close) == 0


@pytest.mark.usefixtures("no_cyclic_collection")
def test_the_mqtt_output_closes_every_socket_when_stopped(mosquitto_url: str) -> None:
    def send_and_stop() -> None:
        feed = ViolationFeed(100)
        output = MqttViolationOutput(MqttOutputSettings(enabled=True, topic_prefix="release",
                                                        client_id=f"out-{uuid.uuid4().hex[:8]}"),
                                     mosquitto_url, feed)
        feed.add_listener(output)
        output.start()
        try:
            feed.publish([violation(1)])
            wait_for(lambda: output.sent == 1, 20, message="the violation sent")
        finally:
            output.stop()

    assert descriptors_left_open(send_and_stop) == 0


@pytest.mark.usefixtures("no_cyclic_collection")
def test_the_ingest_source_closes_every_socket_when_stopped(mosquitto_url: str) -> None:
    broker = urlparse(mosquitto_url)
    assert broker.hostname and broker.port

    def subscribe_and_stop() -> None:
        source = MqttSource(host=broker.hostname or "", port=broker.port or 0,
                            client_id=f"in-{uuid.uuid4().hex[:8]}", topics=["release/#"],
                            on_message=lambda topic, payload, qos: None)
        source.start()
        try:
            wait_for(lambda: source.subscribed, 10, message="the subscription")
        finally:
            source.stop()

    assert descriptors_left_open(subscribe_and_stop) == 0
