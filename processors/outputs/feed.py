"""The violation-change feed: a bounded, sequenced, in-memory fan-out of violation state changes.

The processor publishes each batch of violation changes here once the store has made them durable.
Every change gets the next sequence number; the last `retention` changes stay in memory, so a
stream client that reconnects with the last sequence it saw resumes without a gap as long as that
sequence is still in the window. Listeners (webhook dispatch, MQTT and Kafka outputs, stream wake-ups)
are called synchronously on the publishing thread and must only hand the entries off, never block.

Rules already emit state changes only; the feed still drops a change it has published before, keyed by
(violation_id, status, updated_time_ms), because a crash between the store flush and the bus commit
replays input, and the replay would otherwise alert consumers twice.

Case SLA events (a case's warning time or deadline reached, processors/cases/sla.py) travel on the same
feed, sequence and channels as entries whose `case_event` is set and `violation` is None; every consumer
of violations skips them, and push channels send them only to subscribers whose filter asks for them
(docs/alerts.md, "Case SLA events"). The case store's claim already makes each one unique.

Cursors carry the feed's epoch (its start time), so a cursor from before a restart, when the window was
empty again, is recognised as expired instead of silently pointing at different changes.

Memory: the window is kept in blocks of BLOCK_SIZE changes. The newest `hot` changes (a stream client
further behind is cut off as too slow: `alerts.stream_max_lag`), which live consumers read, stay as
objects; older blocks, read only by a client resuming from far back, are kept as one zlib-compressed
msgpack blob each, about 300 bytes a change instead of 1.7 KB as objects, and the replay check keeps a
16-byte digest per change instead of its key. The default window of 100,000 changes held 166 MB as
objects (40 MB now), grew a process's memory for the half hour it took to fill, and made every full pass
of the garbage collector walk its 600,000 objects (BENCHMARKS.md, "The violation feed's window, compacted").
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from core.models import Violation, ViolationStatus
from processors.cases.sla import CaseSlaEvent

log = logging.getLogger(__name__)

BLOCK_SIZE: Final = 1024
# Decoded cold blocks kept for readers catching up block after block (READ_BATCH is smaller than a block).
DECODED_BLOCKS_KEPT: Final = 4
# zlib's fastest level: a block of 1,024 changes compresses in a few milliseconds, to about half its msgpack.
COMPRESSION_LEVEL: Final = 1


class CursorExpired(LookupError):
    """The cursor points before the retention window (or at an earlier run): changes were missed."""


class InvalidFeedCursor(ValueError):
    """A cursor this feed never handed out."""


@dataclass(frozen=True, slots=True)
class FeedEntry:
    seq: int
    # A violation change, or None for a case event.
    violation: Violation | None
    # Wall-clock time the change was published, for delivery-latency measurements.
    published_time_ms: int
    case_event: CaseSlaEvent | None = None

    @property
    def change(self) -> str:
        if self.case_event is not None:
            return self.case_event.kind.value
        assert self.violation is not None
        return "opened" if self.violation.status is ViolationStatus.OPEN else "cleared"

    @property
    def event(self) -> str:
        """`violation` for a violation change, else the case event's kind: what filters and outputs'
        `events` select on."""
        return "violation" if self.case_event is None else self.case_event.kind.value

    @property
    def idempotency_key(self) -> str:
        if self.case_event is not None:
            return self.case_event.idempotency_key
        assert self.violation is not None
        return change_key(self.violation)

    def message(self, change_id: str, violation: dict[str, Any] | None) -> dict[str, Any]:
        """The JSON body every push channel sends (streams, webhooks, MQTT, Kafka); see docs/alerts.md.
        A case event carries `case` instead of `violation`."""
        if self.case_event is not None:
            return {"id": change_id, "change": self.change, "idempotency_key": self.idempotency_key,
                    "published_time_ms": self.published_time_ms, "case": self.case_event.as_dict()}
        return {"id": change_id, "change": self.change, "idempotency_key": self.idempotency_key,
                "published_time_ms": self.published_time_ms, "violation": violation}


def change_key(violation: Violation) -> str:
    """What makes a violation change unique: the replay check's key and the push channels' idempotency key."""
    return f"{violation.violation_id}:{violation.status.value}:{violation.updated_time_ms}"


def violations_of(entries: Sequence[FeedEntry]) -> list[Violation]:
    """The violation changes among `entries` (without the case events)."""
    return [entry.violation for entry in entries if entry.violation is not None]


Listener = Callable[[Sequence[FeedEntry]], None]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class ViolationFeed:
    def __init__(self, retention: int, *, hot: int = BLOCK_SIZE, now_ms: Callable[[], int] = wall_clock_ms,
                 epoch: int | None = None) -> None:
        """`hot`: the newest changes kept as objects (at least this many; older ones are compacted)."""
        if retention < 1:
            raise ValueError("retention must be at least 1")
        self.retention = retention
        # Whole blocks, and the block being filled besides.
        self._hot_blocks = -(-hot // BLOCK_SIZE) + 1
        self.now_ms = now_ms
        self.epoch = now_ms() if epoch is None else epoch
        # Block b holds sequences b * BLOCK_SIZE + 1 .. (b + 1) * BLOCK_SIZE: a list while hot, then a blob.
        self._blocks: dict[int, list[FeedEntry] | bytes] = {}
        self._first_block = 0
        self._next_to_compact = 0
        self._decoded: OrderedDict[int, list[FeedEntry]] = OrderedDict()
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(list[FeedEntry])
        # Digests of the changes published, oldest first. Twice the window: a replay older than that is
        # also older than anything a client can resume to.
        self._seen: set[bytes] = set()
        self._seen_order: deque[bytes] = deque()
        self._seen_capacity = retention * 2
        self._last_seq = 0
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self.replays_dropped = 0

    # Producing

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def publish(self, violations: Sequence[Violation], *,
                published_time_ms: int | None = None) -> list[FeedEntry]:
        """Append the changes not published before; returns the new entries (also given to listeners).

        `published_time_ms`: when the changes were published, if earlier than now (read back from the
        violations topic in the Kafka set-up: the time the processor wrote them)."""
        now = self.now_ms() if published_time_ms is None else published_time_ms
        fresh: list[FeedEntry] = []
        with self._lock:
            for violation in violations:
                if not self._first_time(violation):
                    self.replays_dropped += 1
                    continue
                self._last_seq += 1
                fresh.append(self._append(FeedEntry(self._last_seq, violation, now)))
            due = self._due_for_compaction()
        self._tell(fresh)
        self._compact(due)  # after the listeners: the changes go out without waiting for zlib
        return fresh

    def publish_case_events(self, events: Sequence[CaseSlaEvent]) -> list[FeedEntry]:
        """Append case SLA events (claimed once by the case store: no replay check here)."""
        now = self.now_ms()
        fresh: list[FeedEntry] = []
        with self._lock:
            for event in events:
                self._last_seq += 1
                fresh.append(self._append(FeedEntry(self._last_seq, None, now, event)))
            due = self._due_for_compaction()
        self._tell(fresh)
        self._compact(due)  # after the listeners: the changes go out without waiting for zlib
        return fresh

    def _first_time(self, violation: Violation) -> bool:
        digest = hashlib.blake2b(change_key(violation).encode(), digest_size=16).digest()
        if digest in self._seen:
            return False
        self._seen.add(digest)
        self._seen_order.append(digest)
        if len(self._seen_order) > self._seen_capacity:
            self._seen.discard(self._seen_order.popleft())
        return True

    def _append(self, entry: FeedEntry) -> FeedEntry:
        block = self._blocks.setdefault((entry.seq - 1) // BLOCK_SIZE, [])
        assert isinstance(block, list), "only the newest block is appended to, and it is never compacted"
        block.append(entry)
        return entry

    def _due_for_compaction(self) -> list[tuple[int, list[FeedEntry]]]:
        """Drops the blocks wholly out of the window; returns the full blocks that are no longer hot."""
        oldest_block = (self.oldest_seq - 1) // BLOCK_SIZE
        while self._first_block < oldest_block:
            self._blocks.pop(self._first_block, None)
            self._first_block += 1
        newest_block = (self._last_seq - 1) // BLOCK_SIZE
        due: list[tuple[int, list[FeedEntry]]] = []
        while self._next_to_compact <= newest_block - self._hot_blocks:
            block = self._blocks.get(self._next_to_compact)
            if isinstance(block, list):
                due.append((self._next_to_compact, block))
            self._next_to_compact += 1
        return due

    def _compact(self, due: list[tuple[int, list[FeedEntry]]]) -> None:
        # Outside the lock: a full block no longer changes, and publishing need not wait for zlib.
        for number, entries in due:
            blob = zlib.compress(self._encoder.encode(entries), COMPRESSION_LEVEL)
            with self._lock:
                if self._blocks.get(number) is entries:  # not dropped from the window meanwhile
                    self._blocks[number] = blob

    def _tell(self, fresh: list[FeedEntry]) -> None:
        if fresh:
            for listener in self._listeners:
                try:
                    listener(fresh)
                except Exception:  # one broken consumer must never stop the pipeline or the others
                    log.exception("violation feed listener %r failed", listener)

    # Consuming

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def oldest_seq(self) -> int:
        """The oldest sequence still held (1 before anything was published)."""
        return max(1, self._last_seq - self.retention + 1)

    def cursor(self, seq: int) -> str:
        return f"{self.epoch}-{seq}"

    def parse_cursor(self, cursor: str) -> int:
        """The sequence a cursor names; CursorExpired when it comes from an earlier run of the feed."""
        epoch_text, _, seq_text = cursor.partition("-")
        try:
            epoch, seq = int(epoch_text), int(seq_text)
        except ValueError:
            raise InvalidFeedCursor(f"cursor {cursor[:40]!r} is not one this feed handed out") from None
        if epoch != self.epoch:
            raise CursorExpired(f"cursor {cursor!r} is from an earlier run; its changes are no longer held")
        if seq < 0 or seq > self._last_seq:
            raise InvalidFeedCursor(f"cursor {cursor!r} is ahead of this feed")
        return seq

    def read_after(self, seq: int, limit: int) -> list[FeedEntry]:
        """Up to `limit` entries after `seq`; CursorExpired when entries after `seq` were already dropped."""
        with self._lock:
            if seq >= self._last_seq:
                return []
            oldest = max(1, self._last_seq - self.retention + 1)
            if seq + 1 < oldest:
                raise CursorExpired(
                    f"changes after sequence {seq} are no longer held (oldest held: {oldest}; the window "
                    f"keeps the last {self.retention})"
                )
            stop = min(self._last_seq, seq + limit)
            # (block, held, first index, end index): read under the lock, decoded after it.
            slices: list[tuple[int, list[FeedEntry] | bytes, int, int]] = []
            for number in range(seq // BLOCK_SIZE, (stop - 1) // BLOCK_SIZE + 1):
                first = number * BLOCK_SIZE + 1
                slices.append((number, self._blocks[number], max(seq + 1, first) - first,
                               min(stop, first + BLOCK_SIZE - 1) - first + 1))
        entries: list[FeedEntry] = []
        for number, held, start, end in slices:
            entries.extend(self._entries_of(number, held)[start:end])
        return entries

    def _entries_of(self, number: int, held: list[FeedEntry] | bytes) -> list[FeedEntry]:
        if isinstance(held, list):
            return held
        with self._lock:
            decoded = self._decoded.get(number)
            if decoded is not None:
                self._decoded.move_to_end(number)
                return decoded
        decoded = self._decoder.decode(zlib.decompress(held))
        with self._lock:
            self._decoded[number] = decoded
            while len(self._decoded) > DECODED_BLOCKS_KEPT:
                self._decoded.popitem(last=False)
        return decoded
