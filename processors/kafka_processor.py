"""A processor in the Kafka consumer group: one rule engine per assigned partition, checkpointed.

Loop: poll -> decode -> each partition's engine -> store writes -> store.flush -> outputs to Kafka
(violations, rule outputs, dead letters) -> commit exactly the offsets polled, once the batch's outputs
are acknowledged. Three threads share the work, a batch apart: the loop polls and judges, a writer
stores the previous batch (SQLite does its work outside the GIL), and a sender sends the outputs of the
one before to Kafka; a batch's offsets are committed at a later step, once it is durable in the store
and Kafka has acknowledged every record sent for it. Each queue holds two batches, which bounds memory
and pushes back on the loop.
Results are durable before their offsets are committed, so a crash replays input instead of losing it,
and the deterministic event and violation ids make the replay idempotent in the store and on the
violations topic.

Rule state lives in the partition it came from: every `checkpoint_interval_s`, when a partition is revoked
and on a clean stop, each partition's engine snapshot is written with the offset it covers
(`processors.kafka_checkpoints`). Snapshots are taken by the loop between two batches and written by the
sender after the batches before them are stored and their outputs acknowledged, so the loop does not
wait for the pipeline to drain (only a revocation and a stop wait for the write). A partition assigned
to this processor is restored from its checkpoint and read from that offset, whichever processor had it
before and however it ended (even kill -9). The checkpoint, not the committed group offset, decides
where a partition resumes; committed offsets are what standard Kafka tooling reads for lag. A partition
with no checkpoint yet is read from the start.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from core.metrics import Metrics
from core.models import DeadLetter, Event, Violation
from core.rate import RateMeter
from core.settings import KafkaSettings
from processors.engine import Engine, EngineOutput
from processors.kafka_bus import (
    REBALANCE_ERRORS,
    KafkaBusError,
    KafkaBusProducer,
    RecordCodec,
    client_config,
)
from processors.kafka_checkpoints import Checkpoint, CheckpointStore
from processors.running_values import HeldRunningValues
from processors.worker import wall_clock_ms
from store.base import Store

log = logging.getLogger(__name__)

UNDECODABLE_EVENT = "undecodable_event"
UNDECODABLE_DEAD_LETTER = "undecodable_dead_letter"


@dataclass
class _Partition:
    """One assigned events partition: its engine and how far it and its checkpoint have got."""

    engine: Engine
    # Next events offset to feed the engine (None until the first record after a restore from scratch).
    next_offset: int | None
    checkpoint_offset: int | None
    # State changed since the last checkpoint (records judged, or held events released by the clock).
    dirty: bool = False


@dataclass
class _WriteJob:
    """One judged batch for the writer: what to store, what to send, and the offsets it covers."""

    events: list[Event]
    dead_letters: list[DeadLetter]
    rejected: list[DeadLetter]
    out: EngineOutput
    offsets: dict[TopicPartition, OffsetAndMetadata]
    started: float
    # Snapshots taken after this batch was judged: written once it and every batch before it are durable.
    checkpoints: list[Checkpoint] = field(default_factory=list)
    # Write the running values held now, not when they are due (partitions lost to another processor).
    write_held: bool = False


class _Rebalance(ConsumerRebalanceListener):
    """Runs inside poll(), between two batches, so engines are never snapshotted mid-batch."""

    def __init__(self, processor: KafkaProcessor) -> None:
        self.processor = processor

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.processor._on_revoked(list(revoked), checkpoint=True)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.processor._on_assigned(list(assigned))

    def on_partitions_lost(self, lost: Any) -> None:
        # Another processor may already own these: a checkpoint from here could only be older than its.
        self.processor._on_revoked(list(lost), checkpoint=False)


class KafkaProcessor:
    def __init__(self, settings: KafkaSettings, engine_factory: Callable[[int, int], Engine], store: Store,
                 metrics: Metrics, *, batch_events: int, dead_letter_payload_bytes: int = 16 * 1024,
                 client_id: str = "citywatch-process", poll_timeout_s: float = 0.1,
                 now_ms: Callable[[], int] = wall_clock_ms,
                 on_stored: Callable[[Sequence[Event]], None] | None = None,
                 on_failure: Callable[[BaseException], None] | None = None,
                 tag_violation: Callable[[Violation], Violation] | None = None,
                 running_values_every_ms: int = 1000) -> None:
        self.settings = settings
        # engine_factory(partition, partitions of the events topic): a fresh engine for one partition.
        self.engine_factory = engine_factory
        self.store = store
        self.metrics = metrics
        self.batch_events = batch_events
        self.dead_letter_payload_bytes = dead_letter_payload_bytes
        self.client_id = client_id
        self.poll_timeout_s = poll_timeout_s
        self.now_ms = now_ms
        self.on_stored = on_stored
        # Called (from the loop's thread) when the loop stops on an error, after its clients are closed.
        self.on_failure = on_failure
        # Adds grid, district and owning department to each violation before it is stored and published.
        self.tag_violation = tag_violation
        self.rate = RateMeter()
        metrics.events_per_second.labels("process").set_function(self.rate.rate)
        self.error: BaseException | None = None
        self.joined = threading.Event()
        self._codec = RecordCodec()
        self._events_topic = settings.topics.events
        self._dead_letters_topic = settings.topics.dead_letters
        self._partitions: dict[int, _Partition] = {}
        # Next offset to read per assigned partition (events and dead letters), for lag.
        self._positions: dict[TopicPartition, int] = {}
        self._status_rows: list[dict[str, Any]] = []
        # Polled batches whose store writes are durable, waiting for their Kafka sends: (offsets, futures).
        # The writer appends, the loop pops from the left.
        self._uncommitted: deque[tuple[dict[TopicPartition, OffsetAndMetadata], list[Any]]] = deque()
        self._jobs: queue.Queue[_WriteJob | None] = queue.Queue(maxsize=2)
        self._writer: threading.Thread | None = None
        # Stored batches for the sender: their outputs go to Kafka while the writer stores the next batch.
        self._stored: queue.Queue[_WriteJob | None] = queue.Queue(maxsize=2)
        self._sender: threading.Thread | None = None
        self._writer_error: BaseException | None = None
        # Forecasts and exposure totals not stored yet (the writer's): the newest per key, written at most
        # once every `running_values_every_ms` and before every checkpoint (processors/running_values.py).
        self._running_values = HeldRunningValues(running_values_every_ms)
        # The loop hands the writer a job at least this often, so held values are written on a quiet feed.
        self._writer_due_ms = 0
        self._last_checkpoint = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaBusProducer | None = None
        self._checkpoints: CheckpointStore | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._producer = KafkaBusProducer(self.settings, client_id=f"{self.client_id}-out",
                                          on_error=self._send_failed, track_sends=True)
        self._checkpoints = CheckpointStore(self.settings, self.client_id)
        self._consumer = KafkaConsumer(
            **client_config(self.settings, self.client_id), group_id=self.settings.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=self.settings.heartbeat_interval_ms,
            max_poll_records=self.batch_events, fetch_max_bytes=64 * 1024 * 1024,
            # A quiet partition answers a fetch after this long at most: bounds publish-to-stored latency.
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        self._consumer.subscribe([self._events_topic, self._dead_letters_topic], listener=_Rebalance(self))
        self._writer = threading.Thread(target=self._write_loop, name="citywatch-kafka-writer", daemon=True)
        self._writer.start()
        self._sender = threading.Thread(target=self._send_loop, name="citywatch-kafka-sender", daemon=True)
        self._sender.start()
        self._thread = threading.Thread(target=self._run, name="citywatch-kafka-processor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the batch in hand, checkpoint every partition, leave the group (partitions move now)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("Kafka processor did not stop within %.0f s", timeout_s)

    def _run(self) -> None:
        assert self._consumer is not None
        clean = False
        try:
            while not self._stop.is_set():
                records = self._consumer.poll(timeout_ms=int(self.poll_timeout_s * 1000),
                                              max_records=self.batch_events)
                self.step(records)
                if time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_interval_s:
                    self.checkpoint(wait=False)
            self.checkpoint()
            self.commit_durable(wait=True)
            clean = True
        except BaseException as exc:  # surfaced through readiness; the role decides what to do
            # Only what an operator must fix gets here (rebalances are handled in commit_durable).
            log.exception("Kafka processor stopped: %s. Its partitions move to the other processors, which "
                          "resume them from their checkpoints; fix the cause and start it again", exc)
            self.error = exc
        finally:
            self._jobs.put(None)  # the writer passes it on to the sender when it is done
            for thread in (self._writer, self._sender):
                if thread is not None:
                    thread.join(30)
            self._close_clients(clean)
        if self.error is not None and self.on_failure is not None:
            self.on_failure(self.error)

    def _write_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                if self._writer_error is None:  # after a failure nothing more is written (or committed)
                    # Before a checkpoint, everything held: the checkpoint's snapshot includes it.
                    self._store(job.events, job.dead_letters, job.out,
                                write_held=bool(job.checkpoints) or job.write_held)
                    self._account(job.events, job.rejected, job.out)
                    if job.events:
                        self.metrics.batch_seconds.observe(time.perf_counter() - job.started)
                    self._stored.put(job)
            except BaseException as exc:
                log.exception("writing a batch failed; it will be replayed")
                self._writer_error = exc
            finally:
                self._jobs.task_done()
        try:
            if self._writer_error is None and self._running_values:  # the loop's end: what is still held
                self._store([], [], EngineOutput(), write_held=True)
        except BaseException as exc:
            log.exception("writing the last forecasts and exposure totals failed")
            self._writer_error = exc
        self._jobs.task_done()
        self._stored.put(None)

    def _send_loop(self) -> None:
        while (job := self._stored.get()) is not None:
            try:
                if self._writer_error is None:
                    self._uncommitted.append((job.offsets, self._send_outputs(job.rejected, job.out)))
                    if job.checkpoints:
                        self._write_checkpoints(job.checkpoints)
            except BaseException as exc:
                log.exception("sending a batch's outputs failed; it will be replayed")
                self._writer_error = exc
            finally:
                self._stored.task_done()
        self._stored.task_done()

    def wait_written(self) -> None:
        """Return once every batch judged so far is stored and its outputs sent (raise if either failed)."""
        self._jobs.join()
        self._stored.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._writer_error is not None:
            raise KafkaBusError(f"storing or sending a batch failed: {self._writer_error!r}") \
                from self._writer_error

    def _close_clients(self, clean: bool) -> None:
        if self._consumer is not None:
            try:
                # Leaves the group at once, so the partitions move without waiting for the session timeout.
                self._consumer.close(autocommit=False)
            except Exception:
                log.exception("closing the Kafka consumer failed")
        for client in (self._producer, self._checkpoints):
            if client is None:
                continue
            try:
                client.close()
            except Exception:
                if clean:
                    log.exception("closing a Kafka client failed")

    # -- one batch -------------------------------------------------------------------------------------

    def step(self, records: dict[TopicPartition, list[ConsumerRecord]]) -> EngineOutput:
        """Judge one polled batch and hand it to the writer; commit what earlier batches made durable."""
        self._raise_if_failed()
        started = time.perf_counter()
        now_ms = self.now_ms()
        out = EngineOutput()
        events: list[Event] = []
        dead_letters: list[DeadLetter] = []  # from the dead-letter topic: to the store
        # Found here (poison records, rule failures): to the dead-letter topic, stored when read back.
        rejected: list[DeadLetter] = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, batch in records.items():
            if not batch:
                continue
            next_offset = batch[-1].offset + 1
            offsets[tp] = OffsetAndMetadata(next_offset, "", -1)
            self._positions[tp] = next_offset
            if tp.topic == self._events_topic:
                partition = self._partitions.get(tp.partition)
                if partition is None:  # not ours any more: its new owner replays it from its checkpoint
                    del offsets[tp]
                    continue
                decoded = self._decode_events(tp, batch, rejected, now_ms)
                out.extend(partition.engine.process(decoded, now_ms))
                partition.next_offset = next_offset
                partition.dirty = True
                events.extend(decoded)
            elif tp.topic == self._dead_letters_topic:
                dead_letters.extend(self._decode_dead_letters(tp, batch, now_ms))
        for number, partition in self._partitions.items():
            # Quiet partitions: the wall clock moves on there too. It releases what they hold, and a
            # device whose events all go to a partition that has gone quiet must still go offline.
            if TopicPartition(self._events_topic, number) not in records:
                held = partition.engine.held
                quiet = partition.engine.process((), now_ms)
                out.extend(quiet)
                partition.dirty = (partition.dirty or partition.engine.held != held or bool(quiet.violations)
                                   or bool(quiet.exposures))
        rejected.extend(out.dead_letters)
        if self.tag_violation is not None and out.violations:
            out.violations = [self.tag_violation(violation) for violation in out.violations]
        if (events or dead_letters or rejected or offsets or out.violations or out.late_events or out.records
                or out.exposures or now_ms >= self._writer_due_ms):
            self._jobs.put(_WriteJob(events, dead_letters, rejected, out, offsets, started))
            self._writer_due_ms = now_ms + self._running_values.every_ms
        self.commit_durable(wait=False)
        self._refresh_status()
        return out

    def _decode_events(self, tp: TopicPartition, batch: list[ConsumerRecord], rejected: list[DeadLetter],
                       now_ms: int) -> list[Event]:
        decode = self._codec.decode_event
        events: list[Event] = []
        for record in batch:
            try:
                events.append(decode(record.value))
            except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
                rejected.append(self._letter(UNDECODABLE_EVENT, tp, record, exc, now_ms))
        return events

    def _decode_dead_letters(self, tp: TopicPartition, batch: list[ConsumerRecord],
                             now_ms: int) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        for record in batch:
            try:
                letters.append(self._codec.decode_dead_letter(record.value))
            except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
                # Stored directly, never sent back to the dead-letter topic (that would loop).
                letters.append(self._letter(UNDECODABLE_DEAD_LETTER, tp, record, exc, now_ms))
        return letters

    def _letter(self, reason: str, tp: TopicPartition, record: ConsumerRecord, exc: Exception,
                now_ms: int) -> DeadLetter:
        value = record.value if isinstance(record.value, bytes) else b""
        return DeadLetter(
            reason=reason,
            detail=f"record {tp.topic}[{tp.partition}]@{record.offset} is not a citywatch "
                   f"{'event' if reason == UNDECODABLE_EVENT else 'dead letter'}: {exc}"[:500],
            topic=tp.topic,
            payload=value[:self.dead_letter_payload_bytes],
            # The record's own time, not the clock: a replayed record gives the same dead letter (same
            # id), which the stores then keep once.
            received_time_ms=record.timestamp if record.timestamp is not None and record.timestamp >= 0
            else now_ms,
            source="kafka",
        )

    def commit_durable(self, *, wait: bool) -> None:
        """Commit the offsets of the oldest batches whose sends are all acknowledged (all, if `wait`).

        Raises KafkaBusError if Kafka refused an output: the loop stops, nothing after it is committed,
        and the batch is replayed by whoever owns the partition next.
        """
        assert self._producer is not None and self._consumer is not None
        if wait:
            self.wait_written()
            self._producer.flush()
        merged: dict[TopicPartition, OffsetAndMetadata] = {}
        while self._uncommitted:
            offsets, sent = self._uncommitted[0]
            if not all(future.is_done for future in sent):
                break
            failed = next((future for future in sent if future.failed()), None)
            if failed is not None:
                raise KafkaBusError(f"an output record was refused: {failed.exception}")
            self._uncommitted.popleft()
            merged.update(offsets)  # batches are in poll order: a later offset replaces an earlier one
        assigned = self._consumer.assignment()
        mine = {tp: offset for tp, offset in merged.items() if tp in assigned}
        if mine:
            try:
                self._consumer.commit(mine)
            except REBALANCE_ERRORS as exc:
                # Committed offsets only feed lag tooling; where a partition resumes is its checkpoint's
                # offset. A partition kept after the rebalance gets these offsets with its next commit.
                self.metrics.kafka_commits_skipped.inc()
                log.warning("offset commit skipped: the consumer group is rebalancing (%s); rejoining",
                            type(exc).__name__)

    def _store(self, events: list[Event], dead_letters: list[DeadLetter], out: EngineOutput, *,
               write_held: bool) -> None:
        """Store a batch's events, dead letters read back and violations, and the forecasts and exposure
        totals held if they are due or `write_held` (durable on return)."""
        store = self.store
        if events:
            store.write_events(events)
        if dead_letters:
            store.write_dead_letters(dead_letters)
        if out.violations:
            store.write_violations(out.violations)
        # Running totals, in the checkpointed engine state: a replay from a checkpoint writes them again.
        self._running_values.hold(out)
        running = self._running_values.write_due(store, self.now_ms(), now=write_held)
        if events or dead_letters or out.violations or running:
            store.flush()

    def _send_outputs(self, rejected: list[DeadLetter], out: EngineOutput) -> list[Any]:
        """Send a stored batch's violations, late events and dead letters; returns the sends' futures."""
        if not (out.violations or out.late_events or rejected):
            return []
        assert self._producer is not None
        topics = self.settings.topics
        self._producer.send_violations(out.violations)
        for event in out.late_events:
            self._producer.send_json(topics.rule_outputs, event.device_id, [event])
        for letter in rejected:
            self._producer.send_json(topics.dead_letters, letter.source, [letter])
        return self._producer.take_sent()

    def _account(self, events: list[Event], rejected: list[DeadLetter], out: EngineOutput) -> None:
        metrics = self.metrics
        if events:
            metrics.events_processed.inc(len(events))
            self.rate.add(len(events))
        if out.duplicates:
            metrics.duplicate_events.inc(out.duplicates)
        if out.late_events:
            metrics.late_events.inc(len(out.late_events))
        if out.suspect_events:
            metrics.suspect_events.inc(len(out.suspect_events))
        for violation in out.violations:
            metrics.violations.labels(violation.type, violation.status.value).inc()
        for letter in rejected:
            if letter.reason == "rule_error":
                metrics.rule_errors.labels(letter.source.removeprefix("rule:")).inc()
            else:
                metrics.dead_letters.labels(reason=letter.reason).inc()
        if events and self.on_stored is not None:
            self.on_stored(events)

    def _send_failed(self, topic: str, exc: BaseException) -> None:
        log.error("Kafka refused a record for %s: %s", topic, exc)
        self.metrics.bus_send_errors.labels(topic).inc()

    # -- checkpoints and rebalancing --------------------------------------------------------------------

    def checkpoint(self, partitions: Sequence[int] | None = None, *, wait: bool = True) -> int:
        """Checkpoint the changed partitions (all by default); returns how many were snapshotted.

        A checkpoint never covers a result that could still be lost: the snapshots are taken now, between
        two batches, and written by the sender thread once every batch judged before them is stored and
        its outputs acknowledged. With `wait` this returns when they are written (a revoked partition, a
        stop); without, the loop goes on judging meanwhile (the periodic checkpoint).
        """
        self._last_checkpoint = time.monotonic()
        numbers = list(self._partitions) if partitions is None else partitions
        due: list[Checkpoint] = []
        for number in numbers:
            partition = self._partitions.get(number)
            if partition is None or not partition.dirty or partition.next_offset is None:
                continue
            due.append(Checkpoint(
                group_id=self.settings.group_id, topic=self._events_topic, partition=number,
                offset=partition.next_offset,
                snapshot=partition.engine.snapshot(), written_wall_ms=self.now_ms()))
            partition.dirty = False
        if due:
            self._jobs.put(_WriteJob([], [], [], EngineOutput(), {}, time.perf_counter(), checkpoints=due))
        if wait:
            self.wait_written()
        return len(due)

    def _write_checkpoints(self, checkpoints: list[Checkpoint]) -> None:
        """In the sender thread, after every earlier batch is stored and sent: wait for the outputs'
        acknowledgements, then write."""
        assert self._checkpoints is not None and self._producer is not None
        self._producer.flush()
        self._checkpoints.write(checkpoints)
        for checkpoint in checkpoints:
            partition = self._partitions.get(checkpoint.partition)
            if partition is not None:
                partition.checkpoint_offset = checkpoint.offset
        self.metrics.checkpoints.inc(len(checkpoints))

    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        assert self._checkpoints is not None and self._consumer is not None
        for tp in assigned:
            if tp.topic != self._events_topic or tp.partition in self._partitions:
                continue
            partitions = len(self._consumer.partitions_for_topic(self._events_topic) or ()) \
                or self.settings.partitions
            engine = self.engine_factory(tp.partition, partitions)
            checkpoint = self._checkpoints.load(tp.partition)
            if checkpoint is None:
                self._consumer.seek_to_beginning(tp)
                self._partitions[tp.partition] = _Partition(engine, None, None)
                log.info("partition %s has no checkpoint: reading it from the start", tp.partition)
                continue
            engine.restore(checkpoint.snapshot)
            self._consumer.seek(tp, checkpoint.offset)
            self._positions[tp] = checkpoint.offset
            self._partitions[tp.partition] = _Partition(engine, checkpoint.offset, checkpoint.offset)
            log.info("partition %s restored from its checkpoint at offset %d (%d events held)",
                     tp.partition, checkpoint.offset, engine.held)
        self.joined.set()
        self._refresh_status()

    def _on_revoked(self, revoked: list[TopicPartition], *, checkpoint: bool) -> None:
        numbers = [tp.partition for tp in revoked if tp.topic == self._events_topic]
        if checkpoint and self.error is None:
            try:
                self.checkpoint(numbers)
            except Exception:  # the next owner replays from the previous checkpoint instead
                log.exception("checkpoint of revoked partitions %s failed", numbers)
        elif self.error is None:
            # Lost: another processor may own them already and store newer totals; what is held here is
            # written at once, like a batch in flight, rather than up to a second later over those.
            self._jobs.put(_WriteJob([], [], [], EngineOutput(), {}, time.perf_counter(), write_held=True))
        for number in numbers:
            self._partitions.pop(number, None)
        for tp in revoked:
            self._positions.pop(tp, None)
            with contextlib.suppress(KeyError):  # no lag was known for it yet
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        self._refresh_status()

    # -- status ----------------------------------------------------------------------------------------

    def _refresh_status(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        rows = []
        for tp in sorted(consumer.assignment(), key=lambda t: (t.topic, t.partition)):
            position = self._positions.get(tp)
            highwater = consumer.highwater(tp)
            lag = None if position is None or highwater is None else max(0, highwater - position)
            if lag is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
            partition = self._partitions.get(tp.partition) if tp.topic == self._events_topic else None
            rows.append({
                "topic": tp.topic, "partition": tp.partition, "position": position, "highwater": highwater,
                "lag": lag,
                "checkpoint_offset": None if partition is None else partition.checkpoint_offset,
                "held_events": None if partition is None else partition.engine.held,
            })
        self._status_rows = rows

    def status(self) -> dict[str, Any]:
        return {
            "role": "process",
            "client_id": self.client_id,
            "group_id": self.settings.group_id,
            "running": self.running,
            "events_per_s": round(self.rate.rate(), 1),
            "events_total": self.rate.total,
            "partitions": list(self._status_rows),
        }
