"""Ingest as one component: MQTT messages in, normalised events and dead letters onto the bus."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence

from citywatch.metrics import Metrics
from citywatch.settings import MqttSettings
from ingest.mqtt_source import MqttSource, wall_clock_ms
from ingest.normalizer import Normalizer
from processors.bus import BusClosed, BusProducer

log = logging.getLogger(__name__)

# Devices choose `kind`, so its metric label is bounded: beyond this many distinct kinds the rest are
# counted as "other" instead of growing the metrics registry without limit.
MAX_KIND_LABELS = 64
OTHER_KIND_LABEL = "other"


class IngestService:
    """MqttSource -> Normalizer -> BusProducer.

    Backpressure: `producer.send` blocks while the bus is full; that blocks paho's network thread, which
    then stops reading the socket and acknowledging, so the broker buffers for us. Nothing is dropped.
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
        self._kind_labels: set[str] = set()
        self._kind_labels_lock = threading.Lock()
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
            on_message=self.handle_message,
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

    def start(self) -> None:
        self._source.start()

    def stop(self) -> None:
        """Stop receiving; call it before closing the bus so nothing new arrives (the bus is not ours).

        Waits for a message being handed to the bus. With a full bus and a live processor that is
        brief; if the processor has died, close the bus first: send() then raises BusClosed, which is
        logged, and this returns.
        """
        self._source.stop()

    def handle_message(self, topic: str, payload: bytes, received_time_ms: int) -> None:
        """One MQTT message: decode, hand to the bus (blocking while it is full), count."""
        self._metrics.messages_received.inc()
        result = self._normalizer.handle(topic, payload, received_time_ms)
        try:
            self._producer.send(result.events, result.dead_letters)
        except BusClosed:
            # Only during shutdown, if the bus was closed before ingest stopped: say what was lost.
            log.warning("bus closed; dropped %d events and %d dead letters from topic %r",
                        len(result.events), len(result.dead_letters), topic)
            return
        for kind, count in Counter(event.kind for event in result.events).items():
            self._metrics.events_accepted.labels(kind=self._kind_label(kind)).inc(count)
        for reason, count in Counter(letter.reason for letter in result.dead_letters).items():
            self._metrics.dead_letters.labels(reason=reason).inc(count)

    def _kind_label(self, kind: str) -> str:
        if kind in self._kind_labels:
            return kind
        with self._kind_labels_lock:
            if len(self._kind_labels) < MAX_KIND_LABELS:
                self._kind_labels.add(kind)
                return kind
        return OTHER_KIND_LABEL
