"""The Kafka side of the bus: topics, record encoding, and the producer ingest hands events to.

Events are keyed by the state key the rules need (`processors.catalogue.partition_key`: the intersection
for rules that join signals and cameras, else the device), so every event one rule instance needs lands in
one partition and is judged by one processor. Values are msgspec-encoded: msgpack for events (the hot
path), JSON for dead letters, violations and rule outputs (read by other systems).

The consumer side, with one rule engine per assigned partition and checkpoints, is
`processors.kafka_processor`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.partitioner.default import murmur2

from core.models import DeadLetter, Event, Violation
from core.settings import KafkaSettings
from processors.bus import BusClosed, BusFull, BusProducer, OnDurable, encode_item
from processors.catalogue import partition_key

log = logging.getLogger(__name__)

# CreateTopics error code for a topic that exists already (another role created it first).
TOPIC_ALREADY_EXISTS = 36


# A commit refused with one of these means the group is rebalancing or has moved on without this member
# (another consumer crashed, joined or left): the next poll rejoins. Normal life in a consumer group,
# never a reason to stop or to start a consumer over (that would rebalance the group once more).
REBALANCE_ERRORS = (CommitFailedError, RebalanceInProgressError, IllegalGenerationError, UnknownMemberIdError)


class KafkaBusError(Exception):
    """Kafka refused or lost records; the message says which topic and why."""


class RecordCodec:
    """Encodes and decodes the values of every citywatch topic (one instance per client: no globals)."""

    def __init__(self) -> None:
        self._msgpack = msgspec.msgpack.Encoder()
        self._json = msgspec.json.Encoder()
        self._event = msgspec.msgpack.Decoder(Event)
        self._dead_letter = msgspec.json.Decoder(DeadLetter)
        self._violation = msgspec.json.Decoder(Violation)

    def encode_event(self, event: Event) -> bytes:
        return self._msgpack.encode(event)

    def decode_event(self, value: bytes) -> Event:
        """Raises msgspec.DecodeError (not msgpack) or msgspec.ValidationError (a field is wrong)."""
        return self._event.decode(value)

    def encode_json(self, item: DeadLetter | Violation | Event) -> bytes:
        return self._json.encode(item)

    def decode_dead_letter(self, value: bytes) -> DeadLetter:
        return self._dead_letter.decode(value)

    def decode_violation(self, value: bytes) -> Violation:
        return self._violation.decode(value)


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (the Java client's murmur2) gives a key."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def client_config(settings: KafkaSettings, client_id: str) -> dict[str, Any]:
    return {"bootstrap_servers": list(settings.bootstrap_servers), "client_id": client_id}


def ensure_topics(settings: KafkaSettings, client_id: str = "citywatch-admin") -> list[str]:
    """Create the missing citywatch topics (when allowed) and check the partition layout; returns the
    names created. Safe when several roles start at once: "already exists" is success.

    Raises KafkaBusError when a topic is missing and may not be created, or when the checkpoints topic has
    fewer partitions than the events topic (each events partition checkpoints into its own partition).
    """
    topics = settings.topics
    compacted = {"cleanup.policy": "compact", "max.message.bytes": str(settings.max_checkpoint_bytes)}
    wanted: dict[str, dict[str, Any]] = {
        name: {"num_partitions": settings.partitions, "replication_factor": settings.replication_factor}
        for name in (topics.events, topics.dead_letters, topics.violations, topics.rule_outputs)
    }
    wanted[topics.checkpoints] = {"num_partitions": settings.partitions,
                                  "replication_factor": settings.replication_factor, "configs": compacted}
    # Registry changes: few, and each role reads them all, so one partition keeps them in order.
    wanted[topics.devices] = {"num_partitions": 1, "replication_factor": settings.replication_factor,
                              "configs": {"cleanup.policy": "compact"}}
    admin = KafkaAdminClient(**client_config(settings, client_id))
    try:
        existing = set(admin.list_topics())
        missing = {name: options for name, options in wanted.items() if name not in existing}
        created: list[str] = []
        if missing:
            if not settings.create_topics:
                raise KafkaBusError(f"Kafka topics {sorted(missing)} do not exist and "
                                    "bus.kafka.create_topics is false: create them, or allow citywatch to")
            response = admin.create_topics(missing, raise_errors=False, wait_for_metadata=True)
            for result in response.get("topics", []):
                code = result.get("error_code", 0)
                if code == 0:
                    created.append(result["name"])
                elif code != TOPIC_ALREADY_EXISTS:
                    raise KafkaBusError(f"could not create Kafka topic {result['name']}: "
                                        f"{result.get('error_message') or f'error code {code}'}")
        partitions = {
            entry["name"]: len(entry["partitions"])
            for entry in admin.describe_topics([topics.events, topics.checkpoints])
        }
    finally:
        admin.close()
    if partitions.get(topics.checkpoints, 0) < partitions.get(topics.events, 0):
        raise KafkaBusError(
            f"topic {topics.checkpoints} has {partitions.get(topics.checkpoints)} partitions but "
            f"{topics.events} has {partitions.get(topics.events)}: give it at least as many")
    if created:
        log.info("created Kafka topics %s", ", ".join(sorted(created)))
    return created


class _Confirmation:
    """Counts down the records of one send() and tells `on_durable` once: None when Kafka acknowledged
    all of them, the error at the first it refused. Futures complete on the producer's I/O thread (or at
    once, in the sending thread, if already done)."""

    __slots__ = ("_lock", "_on_durable", "_pending", "_sealed", "_told")

    def __init__(self, on_durable: OnDurable) -> None:
        self._on_durable = on_durable
        self._lock = threading.Lock()
        self._pending = 0
        self._sealed = False
        self._told = False

    def add(self, future: Any) -> None:
        with self._lock:
            self._pending += 1
        future.add_callback(self._acknowledged)
        future.add_errback(self._refused)

    def seal(self) -> None:
        """Every record is added: from now on the last acknowledgement tells."""
        with self._lock:
            self._sealed = True
            done = self._pending == 0 and not self._told
            self._told = self._told or done
        if done:
            self._on_durable(None)

    def abandon(self) -> None:
        """send() failed: the caller learns it from the exception, never from `on_durable`."""
        with self._lock:
            self._told = True

    def _acknowledged(self, _metadata: Any) -> None:
        with self._lock:
            self._pending -= 1
            done = self._sealed and self._pending == 0 and not self._told
            self._told = self._told or done
        if done:
            self._on_durable(None)

    def _refused(self, error: BaseException) -> None:
        with self._lock:
            self._pending -= 1
            first = not self._told
            self._told = True
        if first:
            self._on_durable(error)


class KafkaBusProducer(BusProducer):
    """Ingest's end of the Kafka bus: events to the events topic by partition key, dead letters to theirs.

    Sends are asynchronous and batched by the client (acks from all in-sync replicas, idempotent
    retries); `flush` waits for them and raises if any record was refused. A full send buffer blocks for
    up to `timeout_s`, then raises BusFull: the ingest's backpressure.
    """

    def __init__(self, settings: KafkaSettings, *, client_id: str = "citywatch-ingest",
                 key_of: Callable[[Event], str] = partition_key,
                 on_error: Callable[[str, BaseException], None] | None = None,
                 track_sends: bool = False) -> None:
        self.settings = settings
        self._track = track_sends
        self._key_of = key_of
        self._on_error = on_error
        self._codec = RecordCodec()
        self._producer = KafkaProducer(
            **client_config(settings, client_id), acks="all", linger_ms=settings.linger_ms,
            batch_size=256 * 1024, max_request_size=4 * 1024 * 1024,
        )
        self._closed = False
        self._lock = threading.Lock()
        self._failures: list[tuple[str, BaseException]] = []
        # Sends since the last take_sent(), for callers that track durability per batch.
        self._sent: list[Any] = []

    def send(self, events: Sequence[Event], dead_letters: Sequence[DeadLetter] = (), *,
             timeout_s: float | None = None, on_durable: OnDurable | None = None) -> None:
        """`on_durable` fires on the producer's I/O thread once Kafka acknowledged every record of this
        call (acks=all), or at the first record it refused."""
        if self._closed:
            raise BusClosed("the Kafka producer is closed")
        topics = self.settings.topics
        # Everything is encoded before anything is sent: a value the bus cannot carry fails the whole
        # send, never half of it.
        records: list[tuple[str, bytes | None, bytes]] = [
            (topics.events, self._key_of(event).encode(), encode_item(event, self._codec.encode_event))
            for event in events]
        records += [(topics.dead_letters, letter.source.encode() or None,
                     encode_item(letter, self._codec.encode_json)) for letter in dead_letters]
        confirmation = None if on_durable is None else _Confirmation(on_durable)
        try:
            for topic, key, value in records:
                self._send(topic, key, value, confirmation)
        except KafkaTimeoutError as exc:
            if confirmation is not None:
                confirmation.abandon()
            raise BusFull(f"Kafka send buffer full: {exc}") from exc
        except BaseException:
            if confirmation is not None:
                confirmation.abandon()
            raise
        if confirmation is not None:
            confirmation.seal()

    def send_json(self, topic: str, key: str | None, items: Sequence[DeadLetter | Violation | Event]) -> None:
        """Send JSON values to any citywatch topic (violations, rule outputs, dead letters)."""
        for item in items:
            self._send(topic, None if key is None else key.encode(), self._codec.encode_json(item))

    def send_violations(self, violations: Sequence[Violation]) -> None:
        # Keyed by id: every state of one violation stays in order in one partition for downstream readers.
        for violation in violations:
            self._send(self.settings.topics.violations, violation.violation_id.encode(),
                       self._codec.encode_json(violation))

    def _send(self, topic: str, key: bytes | None, value: bytes,
              confirmation: _Confirmation | None = None) -> None:
        future = self._producer.send(topic, key=key, value=value)
        future.add_errback(self._failed, topic)
        if confirmation is not None:
            confirmation.add(future)
        if self._track:
            self._sent.append(future)

    def take_sent(self) -> list[Any]:
        """The futures of the records sent since the last call (only with track_sends=True)."""
        sent, self._sent = self._sent, []
        return sent

    def _failed(self, topic: str, exc: BaseException) -> None:
        with self._lock:
            self._failures.append((topic, exc))
        if self._on_error is not None:
            self._on_error(topic, exc)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait for every record sent so far; raise KafkaBusError if any was refused or timed out."""
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise KafkaBusError(f"Kafka flush failed: {exc}") from exc
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            topic, first = failures[0]
            raise KafkaBusError(f"{len(failures)} records were not written (first: topic {topic}: {first})")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.flush(timeout_s=30)
        finally:
            self._producer.close()
