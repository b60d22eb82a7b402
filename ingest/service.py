"""Ingest as one component: MQTT messages in, normalised events and dead letters onto the bus."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from functools import partial

from prometheus_client import Counter

from core.metrics import Metrics
from core.models import DeadLetter, Event
from core.settings import MqttSettings, Settings
from ingest.codecs.catalogue import build_codec
from ingest.mqtt_source import MqttSource, Settle, wall_clock_ms
from ingest.normalizer import Normalizer
from ingest.registry import DeviceRegistry
from ingest.vendor_maps import VendorMapNotices
from processors.bus import BusClosed, BusEncodingError, BusFull, BusProducer

log = logging.getLogger(__name__)

# Devices choose `kind`, so its metric label is bounded: beyond this many distinct kinds the rest are
# counted as "other" instead of growing the metrics registry without limit.
MAX_KIND_LABELS = 64
OTHER_KIND_LABEL = "other"


class IngestService:
    """MqttSource -> Normalizer -> BusProducer.

    Backpressure: `producer.send` blocks while the bus is full; that blocks paho's network thread, which
    then stops reading the socket and acknowledging, so the broker buffers for us. Nothing is dropped.

    Acknowledgement: a QoS 1 message is acknowledged to the broker once the bus confirms every event and
    dead letter made from it (`on_durable`): at hand-over on the in-process bus, once Kafka acknowledged
    the records on the Kafka bus. A message the bus refuses is counted, logged and not acknowledged; the
    source reconnects so that the broker redelivers it.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        settings: MqttSettings,
        topics: Sequence[str],
        normalizer: Normalizer,
        producer: BusProducer,
        metrics: Metrics,
        now_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self._normalizer = normalizer
        self._producer = producer
        self._metrics = metrics
        self._counts = IngestCounts(metrics)
        # Two routes may share a filter; subscribing once is enough.
        unique_topics = list(dict.fromkeys(topics))
        self._source = MqttSource(
            host=host,
            port=port,
            client_id=settings.client_id,
            topics=unique_topics,
            qos=settings.qos,
            username=settings.username,
            password=None if settings.password is None else settings.password.get_secret_value(),
            keepalive_s=settings.keepalive_s,
            reconnect_min_s=settings.reconnect_min_s,
            reconnect_max_s=settings.reconnect_max_s,
            tls=settings.tls,
            on_message_to_ack=self.handle_message,
            max_unacked=settings.max_unacked_messages,
            metrics=metrics,
            now_ms=now_ms,
        )

    @property
    def connected(self) -> bool:
        return self._source.connected

    @property
    def subscribed(self) -> bool:
        return self._source.subscribed

    @property
    def error(self) -> str | None:
        return self._source.error

    @property
    def source(self) -> MqttSource:
        return self._source

    @property
    def unacked(self) -> int:
        """MQTT messages received and not acknowledged yet (waiting for the bus to confirm them)."""
        return self._source.unacked

    def start(self) -> None:
        self._source.start()

    def stop(self, flush_timeout_s: float = 30.0) -> None:
        """Stop receiving; call it before closing the bus so nothing new arrives (the bus is not ours).

        Messages arriving from now on stay unacknowledged (the broker keeps them for the next session);
        the bus is flushed so that what it took is confirmed and acknowledged before the disconnect, and
        a clean restart receives nothing twice. Waits for a message being handed to the bus. With a full
        bus and a live processor that is brief; if the processor has died, close the bus first: send()
        then raises BusClosed, which is logged, and this returns.
        """
        self._source.pause()
        try:
            self._producer.flush(flush_timeout_s)
        except Exception as exc:  # stopping anyway: what is unconfirmed stays unacknowledged
            log.warning("bus flush on stop failed (%s); %d MQTT messages stay unacknowledged and are "
                        "redelivered to the next session", exc, self._source.unacked)
        self._source.stop()

    def handle_message(self, topic: str, payload: bytes, received_time_ms: int,
                       settle: Settle | None = None) -> None:
        """One MQTT message: decode, hand to the bus (blocking while it is full), count; `settle` is
        called with True once the bus confirmed it, with False if the bus refused it."""
        self._counts.received()
        result = self._normalizer.handle(topic, payload, received_time_ms)
        on_durable = None if settle is None else partial(self._confirmed, settle, topic)
        try:
            try:
                self._producer.send(result.events, result.dead_letters, on_durable=on_durable)
            except BusEncodingError as exc:
                # Accepted by the codecs but not carried by the bus (the normalizer refuses every value
                # known to be beyond it; this is the net for the rest): the message becomes dead letters
                # with the reason, never an acknowledged message that went nowhere.
                log.error("the bus cannot carry a message from topic %r (%s); dead-lettered", topic, exc)
                result = self._normalizer.unencodable(topic, payload, received_time_ms, result, str(exc))
                self._producer.send((), result.dead_letters, on_durable=on_durable)
        except (BusClosed, BusFull) as exc:
            # BusClosed only during shutdown, if the bus was closed before ingest stopped.
            self._not_accepted(topic, exc, settle)
            return
        self._counts.accepted(result.events, result.dead_letters)

    def _confirmed(self, settle: Settle, topic: str, error: BaseException | None) -> None:
        """The bus's verdict on one message's records (on the bus's own thread for Kafka)."""
        if error is None:
            settle(True)
        else:
            self._not_accepted(topic, error, settle)

    def _not_accepted(self, topic: str, error: BaseException, settle: Settle | None) -> None:
        self._metrics.mqtt_not_acked.inc()
        log.warning("the bus did not take a message from topic %r (%s: %s); it is not acknowledged and "
                    "the broker redelivers it", topic, type(error).__name__, error)
        if settle is not None:
            settle(False)


class IngestCounts:
    """What ingest counts at /metrics per message: received, events accepted by kind, dead letters by
    reason. Its own piece so that `citywatch up` counts the same way when ingest runs in a process of its
    own (citywatch/ingest_process.py), where the counting happens as the batches arrive."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._kind_labels: set[str] = set()
        self._kind_labels_lock = threading.Lock()
        # Labelled counter children by kind and by reason, looked up once: labels() per message took a
        # lock and built a key on the network thread. Both are bounded (MAX_KIND_LABELS, the reasons).
        self._accepted_by_kind: dict[str, Counter] = {}
        self._dead_letters_by_reason: dict[str, Counter] = {}

    def received(self, messages: int = 1) -> None:
        self._metrics.messages_received.inc(messages)

    def accepted(self, events: Sequence[Event], dead_letters: Sequence[DeadLetter]) -> None:
        """Events and dead letters the bus took."""
        if len(events) == 1:  # most messages: counted without tallying them first
            self._accepted_counter(events[0].kind).inc()
        elif events:
            for kind, count in _tally(event.kind for event in events).items():
                self._accepted_counter(kind).inc(count)
        if dead_letters:
            for reason, count in _tally(letter.reason for letter in dead_letters).items():
                self._dead_letter_counter(reason).inc(count)

    def _accepted_counter(self, kind: str) -> Counter:
        counter = self._accepted_by_kind.get(kind)
        if counter is None:
            label = self._kind_label(kind)
            counter = self._metrics.events_accepted.labels(kind=label)
            if label == kind:  # the kinds beyond MAX_KIND_LABELS ("other") are not remembered one by one
                self._accepted_by_kind[kind] = counter
        return counter

    def _dead_letter_counter(self, reason: str) -> Counter:
        counter = self._dead_letters_by_reason.get(reason)
        if counter is None:
            counter = self._dead_letters_by_reason[reason] = self._metrics.dead_letters.labels(reason=reason)
        return counter

    def _kind_label(self, kind: str) -> str:
        if kind in self._kind_labels:
            return kind
        with self._kind_labels_lock:
            if len(self._kind_labels) < MAX_KIND_LABELS:
                self._kind_labels.add(kind)
                return kind
        return OTHER_KIND_LABEL


def build_normalizer(settings: Settings, registry: DeviceRegistry, tagger: Callable[[Event], Event],
                     metrics: Metrics) -> Normalizer:
    """The normalizer every ingest builds from the configuration (`citywatch up`, its ingest process,
    the Kafka set-up's ingest role): routes, codecs with the vendor maps, the geo tagger."""
    return Normalizer(settings.ingest, settings.mqtt.max_payload_bytes, registry,
                      partial(build_codec, devices=registry, vendor_maps=settings.vendor_maps,
                              notices=VendorMapNotices(metrics)),
                      tagger=tagger)


def _tally(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts
