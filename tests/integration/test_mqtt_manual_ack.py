"""Manual acknowledgement against a real Mosquitto: a QoS 1 message is acknowledged only when it is
settled (from any thread), an unsettled or refused one is redelivered, a settled one never is, and the
number of unsettled messages is bounded."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest

from core.metrics import Metrics
from ingest.mqtt_source import READ_BURST_PACKETS, MqttSource, Settle
from tests.conftest import PublisherFactory
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


class Held:
    """A handler that keeps every message with its settle callable; `policy` may settle at once."""

    def __init__(self, policy: str = "hold") -> None:
        self.policy = policy
        self.lock = threading.Lock()
        self.messages: list[tuple[bytes, Settle]] = []
        self.unacked_seen: list[int] = []
        self.source: MqttSource | None = None

    def __call__(self, topic: str, payload: bytes, received_time_ms: int, settle: Settle) -> None:
        with self.lock:
            self.messages.append((payload, settle))
            if self.source is not None:
                self.unacked_seen.append(self.source.unacked)
        if self.policy == "ack":
            settle(True)

    def payloads(self) -> list[bytes]:
        with self.lock:
            return [payload for payload, _ in self.messages]


@pytest.fixture
def sources() -> Iterator[list[MqttSource]]:
    started: list[MqttSource] = []
    yield started
    for source in started:
        source.stop()


def start_source(url: str, client_id: str, topic: str, handler: Held, sources: list[MqttSource],
                 max_unacked: int = 1000, metrics: Metrics | None = None) -> MqttSource:
    parsed = urlparse(url)
    assert parsed.hostname and parsed.port
    source = MqttSource(host=parsed.hostname, port=parsed.port, client_id=client_id, topics=[topic], qos=1,
                        keepalive_s=5, reconnect_min_s=0.1, reconnect_max_s=0.5,
                        on_message_to_ack=handler, max_unacked=max_unacked, metrics=metrics)
    handler.source = source
    sources.append(source)
    source.start()
    wait_for(lambda: source.subscribed, 5, message="subscription")
    return source


def publish(publisher_factory: PublisherFactory, url: str, topic: str, *payloads: bytes) -> None:
    publisher = publisher_factory(url)
    for payload in payloads:
        publisher.publish(topic, payload, qos=1).wait_for_publish(5)


def nothing_redelivered(url: str, client_id: str, topic: str, publisher_factory: PublisherFactory,
                        sources: list[MqttSource]) -> list[bytes]:
    """What a new session of `client_id` receives before a fresh marker message: the broker sends
    the unacknowledged messages of a resumed session first, so anything before the marker is one."""
    handler = Held("ack")
    source = start_source(url, client_id, topic, handler, sources)
    publish(publisher_factory, url, topic, b"marker")
    wait_for(lambda: b"marker" in handler.payloads(), 5, message="the marker")
    source.stop()
    return handler.payloads()[:handler.payloads().index(b"marker")]


def test_unsettled_messages_are_redelivered_and_settled_ones_are_not(
        mosquitto_url: str, topic_prefix: str, mqtt_publisher: PublisherFactory,
        sources: list[MqttSource]) -> None:
    client_id, topic = f"ingest-{uuid.uuid4().hex[:10]}", f"{topic_prefix}/events"
    held = Held()
    source = start_source(mosquitto_url, client_id, topic, held, sources)
    publish(mqtt_publisher, mosquitto_url, topic, b"m0", b"m1", b"m2")
    wait_for(lambda: len(held.payloads()) == 3, 5, message="3 messages")
    assert source.unacked == 3
    # Settled from another thread (as Kafka's I/O thread does): only m1 is acknowledged.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(held.messages[1][1], True).result()
    wait_for(lambda: source.unacked == 2, 5, message="m1 settled")
    source.stop()  # m0 and m2 were never acknowledged: the broker keeps them for the session

    again = Held("ack")
    start_source(mosquitto_url, client_id, topic, again, sources)
    wait_for(lambda: sorted(again.payloads()) == [b"m0", b"m2"], 5, message="m0 and m2 redelivered")
    sources[-1].stop()
    assert nothing_redelivered(mosquitto_url, client_id, topic, mqtt_publisher, sources) == []


def test_a_refused_message_is_redelivered_on_a_new_connection(
        mosquitto_url: str, topic_prefix: str, mqtt_publisher: PublisherFactory,
        sources: list[MqttSource]) -> None:
    client_id, topic = f"ingest-{uuid.uuid4().hex[:10]}", f"{topic_prefix}/events"
    seen: list[bytes] = []

    def refuse_first(topic: str, payload: bytes, received_time_ms: int, settle: Settle) -> None:
        seen.append(payload)
        settle(seen.count(payload) > 1)  # the bus refuses the first delivery of each message

    parsed = urlparse(mosquitto_url)
    assert parsed.hostname and parsed.port
    source = MqttSource(host=parsed.hostname, port=parsed.port, client_id=client_id, topics=[topic],
                        keepalive_s=5, reconnect_min_s=0.1, reconnect_max_s=0.5,
                        on_message_to_ack=refuse_first)
    sources.append(source)
    source.start()
    wait_for(lambda: source.subscribed, 5, message="subscription")
    attempts = source.connect_attempts
    publish(mqtt_publisher, mosquitto_url, topic, b"r0")
    wait_for(lambda: seen == [b"r0", b"r0"], 10, message="r0 redelivered after the refusal")
    assert source.connect_attempts > attempts  # the source reconnected for the redelivery
    wait_for(lambda: source.subscribed and source.unacked == 0, 5, message="r0 acknowledged")
    source.stop()
    assert nothing_redelivered(mosquitto_url, client_id, topic, mqtt_publisher, sources) == []


def test_unsettled_messages_are_bounded(
        mosquitto_url: str, topic_prefix: str, mqtt_publisher: PublisherFactory,
        sources: list[MqttSource]) -> None:
    client_id, topic = f"ingest-{uuid.uuid4().hex[:10]}", f"{topic_prefix}/events"
    held = Held()
    source = start_source(mosquitto_url, client_id, topic, held, sources, max_unacked=2)
    publish(mqtt_publisher, mosquitto_url, topic, *[f"b{i}".encode() for i in range(6)])
    # Settle the oldest one whenever two wait: the source hands over the next only then.
    for settled in range(6):
        expected = min(6, settled + 2)
        wait_for(lambda expected=expected: len(held.payloads()) >= expected, 5, message=f"message {expected}")
        held.messages[settled][1](True)
    assert held.payloads() == [f"b{i}".encode() for i in range(6)]
    assert max(held.unacked_seen) == 2  # counted on arrival, itself included
    wait_for(lambda: source.unacked == 0, 5, message="all settled")


def test_the_unacked_gauge_counts_the_messages_waiting_to_be_settled(
        mosquitto_url: str, topic_prefix: str, mqtt_publisher: PublisherFactory,
        sources: list[MqttSource]) -> None:
    client_id, topic = f"ingest-{uuid.uuid4().hex[:10]}", f"{topic_prefix}/events"
    held, metrics = Held(), Metrics()
    start_source(mosquitto_url, client_id, topic, held, sources, metrics=metrics)

    def gauge() -> float | None:
        return metrics.registry.get_sample_value("citywatch_mqtt_unacked_messages")

    assert gauge() == 0
    publish(mqtt_publisher, mosquitto_url, topic, b"g0", b"g1", b"g2")
    wait_for(lambda: len(held.payloads()) == 3, 5, message="3 messages")
    assert gauge() == 3
    held.messages[0][1](True)
    held.messages[2][1](True)
    assert gauge() == 1


def test_a_burst_of_messages_arrives_in_order_each_acknowledged_once(
        mosquitto_url: str, topic_prefix: str, mqtt_publisher: PublisherFactory,
        sources: list[MqttSource]) -> None:
    # Many more than one read burst, published without waiting: they reach the socket back to back.
    count = 20 * READ_BURST_PACKETS
    client_id, topic = f"ingest-{uuid.uuid4().hex[:10]}", f"{topic_prefix}/events"
    held = Held("ack")
    source = start_source(mosquitto_url, client_id, topic, held, sources)
    publisher = mqtt_publisher(mosquitto_url)
    infos = [publisher.publish(topic, f"burst{i}".encode(), qos=1) for i in range(count)]
    infos[-1].wait_for_publish(10)
    expected = [f"burst{i}".encode() for i in range(count)]
    wait_for(lambda: len(held.payloads()) >= count, 20, message=f"{count} messages")
    assert held.payloads() == expected
    wait_for(lambda: source.unacked == 0, 5, message="all settled")
    assert source.connect_attempts == 1
    source.stop()
    assert nothing_redelivered(mosquitto_url, client_id, topic, mqtt_publisher, sources) == []


def test_a_message_settled_again_counts_once(
        mosquitto_url: str, topic_prefix: str, mqtt_publisher: PublisherFactory,
        sources: list[MqttSource]) -> None:
    client_id, topic = f"ingest-{uuid.uuid4().hex[:10]}", f"{topic_prefix}/events"
    held = Held()
    source = start_source(mosquitto_url, client_id, topic, held, sources)
    publish(mqtt_publisher, mosquitto_url, topic, b"d0", b"d1")
    wait_for(lambda: len(held.payloads()) == 2, 5, message="2 messages")
    attempts = source.connect_attempts
    first = held.messages[0][1]
    first(True)
    first(True)
    first(False)  # too late: it was acknowledged, so no reconnect to have it redelivered
    assert source.unacked == 1 and source.connected and source.connect_attempts == attempts
    held.messages[1][1](True)
    assert source.unacked == 0
    source.stop()
    assert nothing_redelivered(mosquitto_url, client_id, topic, mqtt_publisher, sources) == []
