"""Violation changes to a Kafka topic (kafka-python), keyed by violation id so that the changes of one
violation stay in order on one partition. Values are the same JSON as every other push channel.

Standalone on purpose: it needs nothing but a bootstrap address and a topic, so it works whichever
bus the pipeline itself runs on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from kafka import KafkaProducer

from core.masking import present_violation
from core.settings import KafkaOutputSettings
from processors.outputs.feed import FeedEntry, ViolationFeed
from processors.outputs.queued import QueuedOutput

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 30.0


class KafkaViolationOutput(QueuedOutput):
    name = "kafka"

    def __init__(self, settings: KafkaOutputSettings, feed: ViolationFeed) -> None:
        super().__init__(events=settings.events)
        self.settings = settings
        self.feed = feed
        self._producer: KafkaProducer | None = None

    def connect(self) -> None:
        """Nothing here: the producer is created on the output thread, so a Kafka that is down at start
        delays only this output, never the pipeline's start."""

    def _connected(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self.settings.bootstrap_servers.split(","),
                acks="all", linger_ms=5, client_id="citywatch-violations-out")
        return self._producer

    def send(self, entries: Sequence[FeedEntry]) -> None:
        producer = self._connected()
        futures = []
        for entry in entries:
            change_id = self.feed.cursor(entry.seq)
            if entry.case_event is not None:
                # Keyed by case id: the events of one case stay in order on one partition.
                message, key = entry.message(change_id, None), entry.case_event.case.case_id
            else:
                assert entry.violation is not None
                shown = present_violation(entry.violation, plates=self.settings.plates)
                message = entry.message(change_id, shown)
                key = entry.violation.violation_id
            futures.append(producer.send(self.settings.topic, key=key.encode(),
                                         value=json.dumps(message, ensure_ascii=False).encode()))
        producer.flush(SEND_TIMEOUT_S)
        for future in futures:
            future.get(timeout=SEND_TIMEOUT_S)  # raises the broker's error for a failed send

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(SEND_TIMEOUT_S)
            self._producer = None
