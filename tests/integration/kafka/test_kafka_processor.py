"""The Kafka bus and processor against a real Kafka-protocol broker (Tansu), in this process.

Real broker, real SQLite; the processor runs its consumer-group loop in a thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import msgspec
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from core.metrics import Metrics
from core.models import Event
from core.sanitation_settings import DeviceOfflineSettings
from core.settings import BinOverflowSettings, DeviceSettings, KafkaSettings
from processors.catalogue import device_partition_key, partition_key
from processors.engine import Engine
from processors.kafka_bus import KafkaBusProducer, RecordCodec, ensure_topics, partition_for
from processors.kafka_processor import KafkaProcessor
from processors.rules.bin_overflow import BinOverflowRule
from processors.rules.device_offline import DeviceOfflineRule
from store.base import DeadLetterQuery, EventQuery, ViolationQuery
from store.sqlite_store import SqliteStore
from tests.support.events import reading
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def engine_factory(partition: int = 0, partitions: int = 1) -> Engine:
    return Engine([BinOverflowRule(BinOverflowSettings())], allowed_lateness_ms=200)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore.in_directory(tmp_path / "data")
    yield store
    store.close()


@pytest.fixture
def processor(kafka_settings: KafkaSettings, store: SqliteStore) -> Iterator[KafkaProcessor]:
    ensure_topics(kafka_settings)
    processor = KafkaProcessor(kafka_settings, engine_factory, store, Metrics(), batch_events=500,
                               client_id="test-processor")
    processor.start()
    yield processor
    processor.stop()


def read_all(settings: KafkaSettings, topic: str, count: int) -> list[bytes]:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        values: list[bytes] = []

        def enough() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                values.extend(record.value for record in batch)
            return len(values) >= count

        wait_for(enough, 15, 0, f"{count} records on {topic}")
        return values
    finally:
        consumer.close()


def stored_violations(store: SqliteStore) -> list:
    return store.query_violations(ViolationQuery(limit=1000)).items


def test_topics_are_created_once_and_a_second_start_finds_them(kafka_settings):
    created = ensure_topics(kafka_settings)
    assert sorted(created) == sorted(kafka_settings.topics.model_dump().values())
    assert ensure_topics(kafka_settings) == []


def test_events_are_judged_stored_and_violations_published_even_when_delivered_twice(
        kafka_settings, processor, store):
    producer = KafkaBusProducer(kafka_settings, client_id="test-ingest")
    events = [reading("bin-a", 0, fill_pct=95), reading("bin-a", 1, fill_pct=97),
              reading("bin-b", 0, fill_pct=20), reading("bin-a", 2, fill_pct=5)]
    try:
        producer.send(events)
        producer.send(events[:2])  # a redelivery, e.g. an MQTT QoS 1 duplicate
        producer.flush()
    finally:
        producer.close()
    [violation] = wait_for(lambda: [v for v in stored_violations(store) if v.status == "cleared"], 20,
                           message="the violation to open and clear")
    assert violation.device_id == "bin-a" and violation.evidence.details["fill_pct"] == [95.0, 97.0]
    assert len(store.query_events(EventQuery(limit=100)).items) == 4
    wait_for(lambda: processor.metrics.duplicate_events._value.get() == 2, 10, message="2 duplicates")
    # Downstream systems see both states of the one violation, under its id, in order.
    published = [msgspec.json.decode(value) for value in
                 read_all(kafka_settings, kafka_settings.topics.violations, 2)]
    assert [(v["violation_id"], v["status"]) for v in published] == [
        (violation.violation_id, "open"), (violation.violation_id, "cleared")]


def test_poison_record_goes_to_the_dead_letter_topic_and_the_stream_goes_on(kafka_settings, processor, store):
    raw = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers)
    codec = RecordCodec()
    good = reading("bin-c", 0, fill_pct=50)
    wrong_field = codec.encode_event(good).replace(b"event_time_ms", b"event_time_xx")
    try:
        for value in (b"\xc1 not msgpack", wrong_field, codec.encode_event(good)):
            raw.send(kafka_settings.topics.events, key=partition_key(good).encode(), value=value)
        raw.flush()
    finally:
        raw.close()
    letters = wait_for(lambda: len(items := store.query_dead_letters(DeadLetterQuery()).items) == 2 and items,
                       20, message="two dead letters stored")
    assert {letter.reason for letter in letters} == {"undecodable_event"}
    assert any("event_time_ms" in letter.detail for letter in letters)  # the reason names the field
    assert any(letter.payload == b"\xc1 not msgpack" for letter in letters)
    on_topic = read_all(kafka_settings, kafka_settings.topics.dead_letters, 2)
    assert len(on_topic) == 2
    wait_for(lambda: store.query_events(EventQuery(device_id="bin-c")).items, 10, message="the good event")


def test_a_partition_moves_with_its_rule_state(kafka_settings, store):
    """Two processors in one group: the first checkpoints on leaving, the second resumes its state."""
    ensure_topics(kafka_settings)
    producer = KafkaBusProducer(kafka_settings, client_id="test-ingest")
    first = KafkaProcessor(kafka_settings, engine_factory, store, Metrics(), batch_events=500,
                           client_id="first")
    first.start()
    try:
        producer.send([reading("bin-m", 0, fill_pct=95), reading("bin-m", 1, fill_pct=96)])
        producer.flush()
        [opened] = wait_for(lambda: stored_violations(store), 20, message="the violation to open")
    finally:
        first.stop()
    assert first.error is None
    second = KafkaProcessor(kafka_settings, engine_factory, store, Metrics(), batch_events=500,
                            client_id="second")
    second.start()
    try:
        producer.send([reading("bin-m", 2, fill_pct=3)])
        producer.flush()
        [cleared] = wait_for(lambda: [v for v in stored_violations(store) if v.status == "cleared"], 20,
                             message="the restored state to clear the violation")
        assert cleared.violation_id == opened.violation_id
        # Resumed at the checkpoint: the one new event, no replay of the two before it.
        wait_for(lambda: second.metrics.events_processed._value.get() == 1, 10, message="one event counted")
        assert second.metrics.duplicate_events._value.get() == 0
    finally:
        second.stop()
        producer.close()


def test_a_device_whose_partition_goes_quiet_still_goes_offline(kafka_settings, store):
    """Its partition gets no record after the device's last one: the wall clock moves on there anyway."""
    ensure_topics(kafka_settings)
    beacon = DeviceSettings(device_id="beacon-q", kind="bin", expected_interval_s=1)  # offline after 3 s

    def engine_with_the_beacon(partition: int, partitions: int) -> Engine:
        own = partition_for(device_partition_key(beacon), partitions) == partition
        rule = DeviceOfflineRule(DeviceOfflineSettings(), [beacon] if own else [])
        return Engine([rule], allowed_lateness_ms=200)

    producer = KafkaBusProducer(kafka_settings, client_id="test-ingest")
    processor = KafkaProcessor(kafka_settings, engine_with_the_beacon, store, Metrics(), batch_events=500,
                               client_id="quiet-processor")
    processor.start()
    try:
        producer.send([reading("beacon-q", 0, battery_pct=90)])
        producer.flush()
        wait_for(lambda: store.query_events(EventQuery(device_id="beacon-q")).items, 20, message="the beacon")
        [offline] = wait_for(lambda: stored_violations(store), 20, message="the beacon to go offline")
        assert offline.type == "device_offline" and offline.evidence.details["limit_s"] == 3
        producer.send([reading("beacon-q", 60, battery_pct=90)])
        producer.flush()
        wait_for(lambda: [v for v in stored_violations(store) if v.status == "cleared"], 20,
                 message="its next message to clear it")
    finally:
        processor.stop()
        producer.close()
    assert processor.error is None


def exposures_stored(store: SqliteStore) -> dict[tuple[str, str, str], float]:
    with closing(sqlite3.connect(store.path)) as db:
        return {(day, device, counter): value for day, device, counter, value in
                db.execute("SELECT day, device_id, counter, value FROM exposure_totals")}


def uncrashed_exposures(events: list[Event]) -> dict[tuple[str, str, str], float]:
    engine = engine_factory()
    engine.process(events, now_wall_ms=0)
    engine.drain()
    return {(t.day, t.device_id, t.counter): t.value for t in engine.exposures.totals()}


def send(settings: KafkaSettings, events: list[Event]) -> None:
    producer = KafkaBusProducer(settings, client_id="test-ingest")
    try:
        producer.send(events)
        producer.flush()
    finally:
        producer.close()


def start_holding(settings: KafkaSettings, store: SqliteStore, running_values_every_ms: int,
                  events: list[Event]) -> KafkaProcessor:
    """A processor that has stored the first two readings' totals and been sent the rest of `events`."""
    ensure_topics(settings)
    processor = KafkaProcessor(settings, engine_factory, store, Metrics(), batch_events=500,
                               client_id="holding-processor", running_values_every_ms=running_values_every_ms)
    processor.start()
    send(settings, events[:2])
    wait_for(lambda: exposures_stored(store), 20, message="the first batch's totals")
    send(settings, events[2:])
    return processor


def test_a_checkpoint_never_covers_exposure_totals_the_store_lacks(kafka_settings, store):
    """Totals are held between store writes; a checkpoint writes what is held first. Otherwise a processor
    killed after the checkpoint would resume past the readings that made them, and they would be lost."""
    settings = kafka_settings.model_copy(update={"checkpoint_interval_s": 0.5})
    events = [reading("bin-h", minute * 60, fill_pct=10 + minute) for minute in range(12)]
    # Held for an hour: only a checkpoint (or the stop) writes the totals after the first batch's.
    processor = start_holding(settings, store, 3_600_000, events)
    try:
        def checkpointed_past_every_event() -> bool:
            rows = [row for row in processor.status()["partitions"]
                    if row["topic"] == settings.topics.events and row["checkpoint_offset"] is not None]
            return sum(row["checkpoint_offset"] for row in rows) == len(events) and \
                processor.metrics.events_processed._value.get() == len(events)

        wait_for(checkpointed_past_every_event, 20, 0.01, "a checkpoint covering every event")
        # At once: the checkpoint was written after the totals it covers.
        reference = uncrashed_exposures(events)
        assert reference and exposures_stored(store) == reference
    finally:
        processor.stop()
    assert processor.error is None


def test_totals_held_on_a_quiet_feed_reach_the_store_within_the_interval(kafka_settings, store):
    settings = kafka_settings.model_copy(update={"checkpoint_interval_s": 3600})  # no checkpoint writes them
    events = [reading("bin-q", minute * 60, fill_pct=10 + minute) for minute in range(12)]
    # The rest of the events arrive within the interval after the first write: held, and no more input.
    processor = start_holding(settings, store, 3_000, events)
    try:
        wait_for(lambda: exposures_stored(store) == uncrashed_exposures(events), 20,
                 message="the held totals to be written without more input")
    finally:
        processor.stop()
    assert processor.error is None


def test_status_reports_lag_and_rate_per_partition(kafka_settings, processor):
    producer = KafkaBusProducer(kafka_settings, client_id="test-ingest")
    try:
        producer.send([reading(f"bin-{i}", i, fill_pct=10) for i in range(50)])
        producer.flush()
    finally:
        producer.close()
    wait_for(lambda: processor.status()["events_total"] == 50, 20, message="50 events processed")

    def caught_up() -> dict:
        status = processor.status()
        events_rows = [row for row in status["partitions"] if row["topic"] == kafka_settings.topics.events]
        done = len(events_rows) == 2 and all(row["lag"] == 0 for row in events_rows)
        return status if done else {}

    status = wait_for(caught_up, 10, message="lag 0 on both partitions")
    assert status["group_id"] == kafka_settings.group_id
    assert sum(row["highwater"] for row in status["partitions"]
               if row["topic"] == kafka_settings.topics.events) == 50
    exposition = processor.metrics.exposition().decode()
    assert f'citywatch_kafka_consumer_lag{{partition="0",topic="{kafka_settings.topics.events}"}} 0.0' \
        in exposition
    assert 'citywatch_events_per_second{role="process"}' in exposition


def test_events_of_one_intersection_share_a_partition():
    detector = Event(event_id="1", device_id="det-9", kind="detector", event_time_ms=0, ingest_time_ms=0,
                     attributes={"intersection": "x-12"})
    camera = Event(event_id="2", device_id="cam-3", kind="track", event_time_ms=0, ingest_time_ms=0,
                   tags={"intersection": "x-12"})
    a_bin = Event(event_id="3", device_id="bin-1", kind="bin", event_time_ms=0, ingest_time_ms=0)
    assert partition_key(detector) == partition_key(camera) == "x-12"
    assert partition_key(a_bin) == "bin-1"
