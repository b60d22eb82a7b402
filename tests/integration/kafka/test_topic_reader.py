"""The topic reader the api, ingest and process roles follow topics with, against a real Kafka-protocol
broker: in a group it commits only what its handler finished, and after a failure it starts over."""

from __future__ import annotations

import threading

import pytest
from kafka import KafkaProducer

from citywatch.settings import KafkaSettings
from processors.kafka_bus import ensure_topics
from processors.kafka_reader import Records, TopicReader
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def test_a_failed_batch_is_read_again_by_the_group_and_nothing_after_it_is_skipped(
        kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings)
    topic = kafka_settings.topics.violations
    producer = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, acks="all")
    for n in range(3):
        producer.send(topic, key=b"k", value=f"r{n}".encode())  # one key: one partition, in order
    producer.flush(10)
    handled: list[str] = []
    failures = threading.Event()

    def handle(records: Records) -> None:
        if not failures.is_set():
            failures.set()
            raise RuntimeError("the webhook store is locked")  # nothing of this batch is durable
        handled.extend(record.value.decode() for record in records)

    reader = TopicReader(kafka_settings, topic, handle, client_id="test-reader",
                         group_id=f"{kafka_settings.group_id}-reader")
    reader.start()
    try:
        wait_for(lambda: len(handled) >= 3, 30, 0.05, "the records after the reader started over")
        assert handled == ["r0", "r1", "r2"]
        wait_for(lambda: reader.healthy, 10, 0.05, "the reader to be healthy again")
        producer.send(topic, key=b"k", value=b"r3")
        producer.flush(10)
        wait_for(lambda: handled[-1:] == ["r3"], 10, 0.05, "a record after the restart")
        assert handled == ["r0", "r1", "r2", "r3"]
    finally:
        reader.stop()
        producer.close()
