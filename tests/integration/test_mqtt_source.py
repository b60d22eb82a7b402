"""MqttSource and IngestService against a real Mosquitto: delivery, restarts, refused credentials."""

from __future__ import annotations

import gc
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import msgspec
import pytest

from core.metrics import Metrics
from core.models import DeadLetter, Event
from core.settings import DeviceSettings, IngestSettings, MqttSettings, TopicRoute
from ingest.codecs.native import NativeCodec
from ingest.embedded_broker import free_port
from ingest.mqtt_source import MqttSource, OnMessage
from ingest.normalizer import Normalizer
from ingest.registry import DeviceRegistry
from ingest.service import IngestService
from processors.inprocess_bus import InProcessBus
from tests.conftest import MosquittoFactory, PublisherFactory
from tests.support.own_mosquitto import own_mosquitto
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

FIXED_NOW_MS = 1_795_669_200_000


class Inbox:
    """Collects (topic, payload, received_time_ms) from a source's network thread."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, int]] = []
        self._lock = threading.Lock()

    def __call__(self, topic: str, payload: bytes, received_time_ms: int) -> None:
        with self._lock:
            self.messages.append((topic, payload, received_time_ms))

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [payload for _, payload, _ in self.messages]


def host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    assert parsed.hostname and parsed.port
    return parsed.hostname, parsed.port


def make_source(url: str, topics: list[str], on_message: OnMessage, *, client_id: str | None = None,
                username: str | None = None, password: str | None = None,
                metrics: Metrics | None = None) -> MqttSource:
    """A source with fast reconnects (0.1 .. 0.5 s) and a fixed clock."""
    host, port = host_port(url)
    return MqttSource(
        host=host, port=port, client_id=client_id or f"ingest-{uuid.uuid4().hex[:10]}", topics=topics,
        qos=1, username=username, password=password, keepalive_s=5, reconnect_min_s=0.1,
        reconnect_max_s=0.5, on_message=on_message, metrics=metrics, now_ms=lambda: FIXED_NOW_MS,
    )


@pytest.fixture
def sources() -> Iterator[list[MqttSource]]:
    """Sources a test starts; all are stopped at the end, even when the test fails."""
    started: list[MqttSource] = []
    yield started
    for source in started:
        source.stop()


def test_source_receives_qos1_messages(
    mosquitto_url: str, topic_prefix: str, mqtt_publisher: PublisherFactory, sources: list[MqttSource],
) -> None:
    inbox, metrics = Inbox(), Metrics()
    source = make_source(mosquitto_url, [f"{topic_prefix}/#"], inbox, metrics=metrics)
    sources.append(source)
    source.start()
    wait_for(lambda: source.subscribed, 5, message="subscription")
    assert metrics.registry.get_sample_value("citywatch_mqtt_connected") == 1

    publisher = mqtt_publisher(mosquitto_url)
    for index in range(3):
        publisher.publish(f"{topic_prefix}/events/d{index}", f"m{index}".encode(), qos=1).wait_for_publish(5)
    wait_for(lambda: len(inbox.messages) == 3, 5, message="3 messages")
    assert sorted(inbox.messages) == [(f"{topic_prefix}/events/d{i}", f"m{i}".encode(), FIXED_NOW_MS)
                                      for i in range(3)]

    source.stop()
    assert (source.connected, source.running) == (False, False)
    assert metrics.registry.get_sample_value("citywatch_mqtt_connected") == 0


def test_receiving_leaves_no_garbage_for_the_cyclic_collector(
    mosquitto_url: str, topic_prefix: str, mqtt_publisher: PublisherFactory, sources: list[MqttSource],
) -> None:
    # Cyclic garbage is freed only by the collector's passes, which stop every thread of the process: a
    # few objects of it per message made those pauses the largest part of ingest's latency tail.
    messages = 2000
    inbox = Inbox()
    source = make_source(mosquitto_url, [f"{topic_prefix}/#"], inbox)
    sources.append(source)
    source.start()
    wait_for(lambda: source.subscribed, 5, message="subscription")
    publisher = mqtt_publisher(mosquitto_url)
    gc.collect()
    gc.disable()
    try:
        for index in range(messages):
            publisher.publish(f"{topic_prefix}/events/d{index % 10}", b"m", qos=1)
        wait_for(lambda: len(inbox.messages) == messages, 20, message=f"{messages} messages")
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert unreachable < messages / 10


def test_handler_exception_is_logged_truncated_and_the_source_keeps_going(
    mosquitto_url: str, topic_prefix: str, mqtt_publisher: PublisherFactory, sources: list[MqttSource],
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbox = Inbox()

    def handler(topic: str, payload: bytes, received_time_ms: int) -> None:
        if payload.startswith(b"bad"):
            raise RuntimeError("handler bug")
        inbox(topic, payload, received_time_ms)

    source = make_source(mosquitto_url, [f"{topic_prefix}/#"], handler)
    sources.append(source)
    source.start()
    wait_for(lambda: source.subscribed, 5, message="subscription")
    publisher = mqtt_publisher(mosquitto_url)
    publisher.publish(f"{topic_prefix}/x", b"bad" + b"x" * 1000, qos=1).wait_for_publish(5)
    publisher.publish(f"{topic_prefix}/x", b"good", qos=1).wait_for_publish(5)
    wait_for(lambda: inbox.payloads() == [b"good"], 5, message="the good message")
    [record] = [r for r in caplog.records if "message handler failed" in r.getMessage()]
    assert record.exc_info is not None
    assert "(1003 bytes)" in record.getMessage()
    assert source.connected


def test_broker_down_at_start_is_retried_until_it_comes_up(
    mosquitto_factory: MosquittoFactory, topic_prefix: str, mqtt_publisher: PublisherFactory,
    sources: list[MqttSource],
) -> None:
    port = free_port()
    inbox = Inbox()
    source = make_source(f"mqtt://127.0.0.1:{port}", [f"{topic_prefix}/#"], inbox)
    sources.append(source)
    source.start()
    wait_for(lambda: source.connect_attempts >= 2, 5, message="a retried connection")
    assert (source.connected, source.error) == (False, None)

    broker = mosquitto_factory(port=port)
    wait_for(lambda: source.subscribed, 5, message="subscription once the broker is up")
    mqtt_publisher(broker.url).publish(f"{topic_prefix}/a", b"hello", qos=1).wait_for_publish(5)
    wait_for(lambda: inbox.payloads() == [b"hello"], 5, message="delivery")


def test_source_reconnects_and_resubscribes_after_a_broker_restart(
    mosquitto_factory: MosquittoFactory, topic_prefix: str, mqtt_publisher: PublisherFactory,
    sources: list[MqttSource],
) -> None:
    broker = mosquitto_factory()
    inbox = Inbox()
    source = make_source(broker.url, [f"{topic_prefix}/#"], inbox)
    sources.append(source)
    source.start()
    wait_for(lambda: source.subscribed, 5, message="first subscription")
    mqtt_publisher(broker.url).publish(f"{topic_prefix}/a", b"before", qos=1).wait_for_publish(5)
    wait_for(lambda: inbox.payloads() == [b"before"], 5, message="message before the restart")

    broker.stop()
    wait_for(lambda: not source.connected, 5, message="the source to notice the broker is gone")
    # A new broker without persistence: it knows nothing of our session, so only re-subscribing helps.
    restarted = mosquitto_factory(port=broker.port)
    wait_for(lambda: source.subscribed, 5, message="re-subscription after the restart")
    mqtt_publisher(restarted.url).publish(f"{topic_prefix}/a", b"after", qos=1).wait_for_publish(5)
    wait_for(lambda: inbox.payloads() == [b"before", b"after"], 5, message="message after the restart")
    assert source.error is None


def test_persistent_session_delivers_what_was_published_while_ingest_was_away(
    mosquitto_url: str, topic_prefix: str, mqtt_publisher: PublisherFactory, sources: list[MqttSource],
) -> None:
    client_id = leave_a_session(mosquitto_url, [f"{topic_prefix}/#"])
    mqtt_publisher(mosquitto_url).publish(f"{topic_prefix}/a", b"while away", qos=1).wait_for_publish(5)
    inbox = Inbox()
    second = make_source(mosquitto_url, [f"{topic_prefix}/#"], inbox, client_id=client_id)
    sources.append(second)
    second.start()
    wait_for(lambda: inbox.payloads() == [b"while away"], 5, message="the queued message")


@pytest.fixture
def unbounded_broker(tmp_path: Path) -> Iterator[str]:
    """A Mosquitto that sends a resumed session everything it queued at once (no in-flight window), so
    that hundreds of messages reach the source's socket back to back."""
    with own_mosquitto(tmp_path, "max_inflight_messages 0\nmax_queued_messages 10000\n") as (url, _):
        yield url


def leave_a_session(url: str, topics: list[str]) -> str:
    """A client id whose persistent session is subscribed to `topics` and not connected: the broker
    queues what is published to them meanwhile."""
    client_id = f"ingest-{uuid.uuid4().hex[:10]}"
    first = make_source(url, topics, Inbox(), client_id=client_id)
    first.start()
    wait_for(lambda: first.subscribed, 5, message="first subscription")
    first.stop()
    return client_id


def test_large_and_small_messages_queued_together_arrive_whole_and_in_order(
    unbounded_broker: str, topic_prefix: str, mqtt_publisher: PublisherFactory, sources: list[MqttSource],
) -> None:
    # Queued while the source is away, then sent back to back: the source reads the socket in chunks of
    # up to 64 KiB, and these straddle them (one message is several chunks long).
    client_id = leave_a_session(unbounded_broker, [f"{topic_prefix}/#"])
    # Ending with many small ones: the last chunk holds far more than one burst of packets.
    sizes = [10, 70_000, 3, 65_536, 1, 200_000, *range(100, 400), *[5] * 500]
    payloads = [bytes([65 + n % 26]) * size for n, size in enumerate(sizes)]
    publisher = mqtt_publisher(unbounded_broker)
    infos = [publisher.publish(f"{topic_prefix}/big", payload, qos=1) for payload in payloads]
    infos[-1].wait_for_publish(10)

    inbox = Inbox()
    second = make_source(unbounded_broker, [f"{topic_prefix}/#"], inbox, client_id=client_id)
    sources.append(second)
    second.start()
    # Within 4 s: bytes left unread in the source's buffer until the socket wakes it again (the next
    # keepalive, 5 s) would hold messages back.
    wait_for(lambda: len(inbox.payloads()) >= len(payloads), 4, message=f"{len(payloads)} messages")
    assert inbox.payloads() == payloads


def _password_file(directory: Path, user: str, password: str) -> Path:
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(tool).exists():
        pytest.fail("mosquitto_passwd is missing; run `make test`, which installs mosquitto", pytrace=False)
    path = directory / "passwords"
    subprocess.run([tool, "-c", "-b", str(path), user, password], check=True, capture_output=True)
    return path


def test_refused_credentials_set_error_and_stop_retrying(
    mosquitto_factory: MosquittoFactory, tmp_path: Path, topic_prefix: str, sources: list[MqttSource],
) -> None:
    broker = mosquitto_factory(password_file=_password_file(tmp_path, "ingest", "right"))

    # The broker does accept the right password, so the refusal below is about the password alone.
    good = make_source(broker.url, [f"{topic_prefix}/#"], Inbox(), username="ingest", password="right")
    sources.append(good)
    good.start()
    wait_for(lambda: good.subscribed, 5, message="connection with the right password")

    metrics = Metrics()
    bad = make_source(broker.url, [f"{topic_prefix}/#"], Inbox(), username="ingest", password="wrong",
                      metrics=metrics)
    sources.append(bad)
    bad.start()
    error = wait_for(lambda: bad.error, 5, message="the refusal to be recorded")
    assert "refused the connection" in error and "Not retrying" in error
    wait_for(lambda: not bad.running, 5, message="the retry loop to end")
    assert (bad.connected, bad.connect_attempts) == (False, 1)
    assert metrics.registry.get_sample_value("citywatch_mqtt_connected") == 0


# --- the ingest service end to end ----------------------------------------------------------------


def native(device_id: str, time_ms: int, fill_pct: float) -> bytes:
    return msgspec.json.encode({"device_id": device_id, "kind": "bin", "time": time_ms,
                                "attributes": {"fill_pct": fill_pct}})


def ingest_service(url: str, prefix: str, bus: InProcessBus, metrics: Metrics) -> IngestService:
    host, port = host_port(url)
    settings = IngestSettings(routes=[TopicRoute(pattern=f"{prefix}/events/#", codec="native")])
    registry = DeviceRegistry([DeviceSettings(device_id="bin-0001", kind="bin", tags={"zone": "A"})])
    normalizer = Normalizer(settings, 4096, registry, {"native": NativeCodec()})
    mqtt = MqttSettings(client_id=f"ingest-{uuid.uuid4().hex[:10]}", reconnect_min_s=0.1)
    return IngestService(host=host, port=port, settings=mqtt, topics=[f"{prefix}/events/#"],
                         normalizer=normalizer, producer=bus.producer(), metrics=metrics,
                         now_ms=lambda: FIXED_NOW_MS)


def test_ingest_service_puts_events_and_dead_letters_on_the_bus(
    mosquitto_url: str, topic_prefix: str, mqtt_publisher: PublisherFactory,
) -> None:
    bus, metrics = InProcessBus(100), Metrics()
    service = ingest_service(mosquitto_url, topic_prefix, bus, metrics)
    service.start()
    try:
        wait_for(lambda: service.subscribed, 5, message="subscription")
        publisher = mqtt_publisher(mosquitto_url)
        topic = f"{topic_prefix}/events/bin-0001"
        publisher.publish(topic, native("bin-0001", FIXED_NOW_MS - 5, 93.0), qos=1).wait_for_publish(5)
        publisher.publish(topic, b"{oops", qos=1).wait_for_publish(5)
        wait_for(lambda: len(bus) == 2, 5, message="two items on the bus")
    finally:
        service.stop()
        bus.close()
    batch = bus.consumer().poll(10, 1)
    [event] = batch.events
    [letter] = batch.dead_letters
    assert isinstance(event, Event) and isinstance(letter, DeadLetter)
    assert (event.device_id, event.attributes, event.tags, event.ingest_time_ms) == (
        "bin-0001", {"fill_pct": 93.0}, {"zone": "A"}, FIXED_NOW_MS)
    assert (letter.reason, letter.payload) == ("malformed_json", b"{oops")
    assert metrics.registry.get_sample_value("citywatch_events_accepted_total", {"kind": "bin"}) == 1


def test_a_full_bus_holds_ingest_back_without_losing_messages(
    mosquitto_url: str, topic_prefix: str, mqtt_publisher: PublisherFactory,
) -> None:
    bus, metrics = InProcessBus(2), Metrics()
    service = ingest_service(mosquitto_url, topic_prefix, bus, metrics)
    service.start()
    consumer = bus.consumer()
    received: list[Event] = []
    try:
        wait_for(lambda: service.subscribed, 5, message="subscription")
        publisher = mqtt_publisher(mosquitto_url)
        for index in range(20):
            publisher.publish(f"{topic_prefix}/events/bin-0001",
                              native("bin-0001", FIXED_NOW_MS - 1000 + index, float(index)), qos=1)
        wait_for(lambda: len(bus) == 2, 5, message="the bus to fill up")
        # Ingest is now blocked in send(); draining the bus lets everything through, in order.
        wait_for(lambda: received.extend(consumer.poll(5, 0.05).events) or len(received) == 20, 10,
                 message="all 20 events")
    finally:
        # Closed first: should the test fail with ingest blocked on the full bus, send() raises
        # BusClosed and stop() does not wait for it forever.
        bus.close()
        service.stop()
    assert [event.attributes["fill_pct"] for event in received] == [float(i) for i in range(20)]
