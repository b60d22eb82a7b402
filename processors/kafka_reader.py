"""A background reader of one citywatch topic, for the roles that follow a topic rather than judge it: the
api role follows violation changes (streams, webhooks), ingest and process follow device changes.

Two ways to read:

- **Every partition, no group** (`group_id=None`): each process sees every record, from the beginning
  (`start="beginning"`: a compacted topic replayed into local state) or from the end (`start="end"`:
  live changes only). Nothing is committed.
- **As one member of a consumer group**: the group's members split the partitions, so each record is
  handled by one of them. The committed offset moves only after `handle` returned for the records
  polled, so `handle` must make its results durable before returning: a crash then replays, never skips.

`handle` runs on the reader's thread with each polled batch in partition order. A failure (an exception
from `handle`, Kafka unreachable) is logged, kept in `error` (the role's readiness reports it) and the
reader starts over with a new consumer after a backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from core.settings import KafkaSettings
from processors.kafka_bus import REBALANCE_ERRORS, client_config

log = logging.getLogger(__name__)

# Backoff between attempts when the reader starts over after a failure.
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0

Records = Sequence[Any]  # kafka-python ConsumerRecord (key, value, partition, offset, timestamp)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, reader: TopicReader) -> None:
        self.reader = reader

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.reader._set_assignment(self.reader.assigned - {tp.partition for tp in revoked}, joined=False)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.reader._set_assignment(self.reader.assigned | {tp.partition for tp in assigned})


class TopicReader:
    def __init__(self, settings: KafkaSettings, topic: str, handle: Callable[[Records], None], *,
                 client_id: str, group_id: str | None = None,
                 start: Literal["beginning", "end"] = "end",
                 on_assignment: Callable[[frozenset[int]], None] | None = None,
                 poll_timeout_ms: int = 200, max_records: int = 500) -> None:
        self.settings = settings
        self.topic = topic
        self.group_id = group_id
        self.client_id = client_id
        self._handle = handle
        self._start = start
        self._on_assignment = on_assignment
        self._poll_timeout_ms = poll_timeout_ms
        self._max_records = max_records
        self._stop = threading.Event()
        self._stop_deadline: float | None = None
        self._joined = False  # in the group with an assignment, not joining or rebalancing
        self._thread: threading.Thread | None = None
        # Set once the reader is positioned (every partition) or first given partitions (group).
        self.ready = threading.Event()
        # Every partition, from the beginning: set once it has handled what the topic held at start.
        self.caught_up = threading.Event()
        self._start_ends: dict[Any, int] = {}
        self.error: BaseException | None = None
        self.assigned: frozenset[int] = frozenset()
        self.partitions = 0  # of the topic, known once the reader is positioned or assigned
        self.records = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"citywatch-reader-{self.topic}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def healthy(self) -> bool:
        """Reading: positioned or in the group, not starting over after a failure."""
        return self.running and self.ready.is_set() and self.error is None

    def wait_ready(self, timeout_s: float) -> bool:
        return self.ready.wait(timeout_s)

    def _set_assignment(self, partitions: frozenset[int], joined: bool = True) -> None:
        self.assigned = frozenset(partitions)
        self._joined = joined
        if self._on_assignment is not None:
            self._on_assignment(self.assigned)
        if joined:
            self.error = None
            self.ready.set()

    def _consumer(self) -> KafkaConsumer:
        settings = self.settings
        if self.group_id is None:
            consumer = KafkaConsumer(**client_config(settings, self.client_id), group_id=None,
                                     enable_auto_commit=False, fetch_max_wait_ms=100)
            partitions = sorted(consumer.partitions_for_topic(self.topic))
            if not partitions:
                consumer.close()
                raise RuntimeError(f"Kafka topic {self.topic} does not exist")
            self.partitions = len(partitions)
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            if self._start == "beginning":
                consumer.seek_to_beginning(*tps)
            else:
                consumer.seek_to_end(*tps)
            for tp in tps:
                consumer.position(tp)  # resolve the seek now: "ready" means positioned
            self._start_ends = consumer.end_offsets(tps)
            self._set_assignment(frozenset(partitions))
            return consumer
        consumer = KafkaConsumer(
            **client_config(settings, self.client_id), group_id=self.group_id, enable_auto_commit=False,
            # A group that never committed starts at the beginning: nothing written before the first
            # member joined is skipped (see docs/kafka.md).
            auto_offset_reset="earliest", session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms, fetch_max_wait_ms=100)
        self.partitions = len(consumer.partitions_for_topic(self.topic))
        consumer.subscribe([self.topic], listener=_Listener(self))
        return consumer

    def _stopping(self) -> bool:
        """Asked to stop, and not in the middle of a group join: a consumer closed mid-join leaks its
        connection (kafka-python) and can leave the group stuck in a rebalance (Tansu), so a stop during
        a join waits for it to finish (a few seconds, at most the session timeout)."""
        if not self._stop.is_set():
            return False
        if self.group_id is None or self._joined:
            return True
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self.settings.session_timeout_ms / 1000
        return time.monotonic() > self._stop_deadline

    def _run(self) -> None:
        """Read until stopped; after a failure (Kafka unreachable at start, `handle` raising) start over
        with a new consumer after a backoff: a group resumes from its committed offsets (the failed batch
        is read again), every-partition reading from its start position."""
        delay_s = RETRY_MIN_S
        while not self._stop.is_set():
            try:
                self._read()
                return
            except Exception as exc:
                self.error = exc
                self._set_assignment(frozenset(), joined=False)
                self.ready.clear()
                log.exception("reader of Kafka topic %s failed; starting over in %.1f s", self.topic, delay_s)
            self._stop.wait(delay_s)
            delay_s = min(RETRY_MAX_S, delay_s * 2)

    def _read(self) -> None:
        consumer = self._consumer()
        try:
            while not self._stopping():
                polled = consumer.poll(timeout_ms=self._poll_timeout_ms, max_records=self._max_records)
                records = [record for batch in polled.values() for record in batch]
                if records:
                    self._handle(records)
                    self.records += len(records)
                if not self.caught_up.is_set() and self.group_id is None and all(
                        consumer.position(tp) >= end for tp, end in self._start_ends.items()):
                    self.caught_up.set()
                if records and self.group_id is not None:
                    try:
                        consumer.commit()  # the positions polled: handle() made their results durable
                    except REBALANCE_ERRORS as exc:
                        # The group is rebalancing or the partitions moved meanwhile: the next poll rejoins,
                        # and whoever owns them replays from the last commit (idempotent handling).
                        log.warning("commit of %s by group %s failed: %s", self.topic, self.group_id, exc)
        finally:
            consumer.close()  # leaves the group at once, so the partitions move without a timeout
