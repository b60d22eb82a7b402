"""The topic reader the api, ingest and process roles follow topics with, against a real Kafka-protocol
broker: in a group it commits only what its handler finished, and after a failure it starts over."""

from __future__ import annotations

import threading

import pytest
from kafka import KafkaProducer

from core.settings import KafkaSettings
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


def test_group_members_keep_reading_while_others_join_and_leave(kafka_settings: KafkaSettings) -> None:
    """Rebalances are normal life: a reader whose commit is refused while others join and leave rejoins,
    it never starts over (which would rebalance the group once more) and never misses a record."""
    ensure_topics(kafka_settings)
    topic = kafka_settings.topics.violations
    group = f"{kafka_settings.group_id}-members"
    handled: set[str] = set()
    lock = threading.Lock()

    def handle(records: Records) -> None:
        with lock:
            handled.update(record.value.decode() for record in records)

    def member(name: str) -> TopicReader:
        reader = TopicReader(kafka_settings, topic, handle, client_id=name, group_id=group, max_records=5)
        reader.start()
        return reader

    producer = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, acks="all")
    stop = threading.Event()
    sent: list[str] = []

    def produce() -> None:  # a record every 5 ms on both partitions: commits happen all the time
        while not stop.wait(0.005):
            value = f"r{len(sent)}"
            producer.send(topic, key=value.encode(), value=value.encode())
            sent.append(value)

    steady = member("steady")
    feeding = threading.Thread(target=produce)
    try:
        wait_for(lambda: steady.healthy and steady.assigned, 30, 0.05, "the first member to join")
        feeding.start()
        for round_ in range(2):  # another member joins, then leaves: two rebalances a round
            visitor = member(f"visitor-{round_}")
            wait_for(lambda visitor=visitor: bool(visitor.assigned), 30, 0.05,
                     "the visitor to get a partition")
            visitor.stop()
            wait_for(lambda: len(steady.assigned) == kafka_settings.partitions, 30, 0.05,
                     "the steady member to own every partition again")
        stop.set()
        feeding.join(10)
        producer.flush(10)
        wait_for(lambda: set(sent) <= handled, 30, 0.05, "every record handled")
        assert steady.error is None and steady.healthy
    finally:
        stop.set()
        steady.stop()
        producer.close()
