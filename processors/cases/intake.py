"""Violation changes into cases, off the pipeline's thread: a feed listener with its own worker.

The feed calls listeners on the publishing thread (the processor's, or the api role's topic reader), so
the listener only enqueues into a bounded queue (each hand-off as one list); the worker applies the
changes to the case store in order, in chunks (in `citywatch up` through a child process:
processors/cases/intake_process.py). In `citywatch up` a full queue drops the change (counted and
logged, as the alert outputs do), so the processor never waits for the database. The api role's
violations reader can wait instead (`wait_when_full`): the topic keeps the changes, and its reader only
falls behind. It calls `barrier()`, which waits until everything enqueued so far is applied, before it
commits its offsets, so a restart never skips a change the cases had not taken yet; the barrier raises
when the intake gave changes up at a stop, so their offsets are not committed either.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Sequence

from core.metrics import Metrics
from core.models import ViolationStatus
from processors.cases.service import CaseService
from processors.outputs.feed import FeedEntry
from store.relational import RelationalUnavailable

log = logging.getLogger(__name__)

_BATCH = 1000
# After the first change of a chunk, the worker waits this long for more before applying it (unless a
# barrier or a stop is waiting): a chunk costs a transaction and a few queries whatever its size, so at
# 1,000 changes/s chunks of ~500 cost a fifth less CPU per change than chunks of ~100, and those a third
# less than the few it would find otherwise (BENCHMARKS.md, "Case intake"). Half a second is nothing to a
# case's deadline, counted in hours.
GATHER_S = 0.5
# While the case store is unreachable a change is retried, waiting twice as long each time up to the max.
RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0


class IntakeStopped(RuntimeError):
    """Changes handed to the intake were given up on at a stop."""


class CaseIntake:
    def __init__(self, service: CaseService, capacity: int = 100_000, *,
                 wait_when_full: bool = False) -> None:
        self.service = service
        self.capacity = capacity
        self._wait_when_full = wait_when_full
        # Hand-offs as the feed gave them (lists of changes), taken whole: the publishing thread pays one
        # lock and one append per hand-off, not a queue operation per change.
        self._handed: collections.deque[list[FeedEntry]] = collections.deque()
        self._changed = threading.Condition()
        self._queued = 0  # changes in `_handed`
        self._enqueued = 0  # changes ever queued, and of those applied or failed: the barrier's counts
        self._done = 0
        self._stopping = False
        self._barriers = 0  # barriers waiting: the worker does not wait to gather more meanwhile
        self._thread: threading.Thread | None = None
        self._giving_up = threading.Event()
        self._hurry = threading.Event()  # a barrier or a stop waits: apply what is queued now
        self.applied = 0
        self.dropped = 0
        self.failed = 0
        self._metrics: Metrics | None = None
        service.metrics_hooks.append(self.report_to)

    def report_to(self, metrics: Metrics) -> None:
        self._metrics = metrics
        metrics.case_intake_queue.set_function(self.queued)

    def queued(self) -> int:
        """Changes handed over and not yet taken by the worker."""
        return self._queued

    def _count(self, outcome: str, amount: int = 1) -> None:
        if self._metrics is not None:
            self._metrics.case_changes.labels(outcome).inc(amount)

    def __call__(self, entries: Sequence[FeedEntry]) -> None:
        may_take = self.service.router.may_take
        # A case event is made by the cases: nothing for them to apply. An opening whose type no route
        # takes is left out; a clearing is always queued: only the store knows whether its violation
        # joined a case (under the routes of an earlier start, say).
        taken = [entry for entry in entries if entry.violation is not None
                 and (entry.violation.status is not ViolationStatus.OPEN or may_take(entry.violation.type))]
        while taken:
            with self._changed:
                room = self.capacity - self._queued
                if room <= 0 and self._wait_when_full and not self._giving_up.is_set():
                    self._changed.wait(1.0)
                    continue
                part, taken = taken[:max(0, room)], taken[max(0, room):]
                if part:
                    self._handed.append(part)
                    self._queued += len(part)
                    self._enqueued += len(part)
                    if self._queued == len(part):
                        self._changed.notify_all()  # the worker may be waiting for a first change
                if not taken or self._wait_when_full:
                    continue
                dropped = len(taken)
                taken = []
            self.dropped += dropped
            self._count("dropped", dropped)
            if self.dropped == dropped or self.dropped // 1000 > (self.dropped - dropped) // 1000:
                log.warning("case intake queue full: %d violation changes dropped so far", self.dropped)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="citywatch-cases", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Apply what is queued (up to `timeout_s`; while the store is unreachable, the changes still
        queued then are given up on, logged), then stop."""
        if self._thread is None:
            return
        self._hurry.set()
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._giving_up.set()
            self._thread.join(timeout_s)
        self._thread = None

    def barrier(self) -> None:
        """Return once every change enqueued before the call has been applied (or failed); raise
        IntakeStopped when the intake gave up on changes at a stop (the store was still unreachable), so
        that the caller does not commit the offsets of changes the cases never took."""
        worker = self._thread
        if worker is not None:
            with self._changed:
                target = self._enqueued
                self._barriers += 1
                self._hurry.set()
                try:
                    while self._done < target and worker.is_alive():
                        self._changed.wait(0.5)
                finally:
                    self._barriers -= 1
        if self._giving_up.is_set():
            raise IntakeStopped("the case intake stopped before the case store took every change")

    def _take(self) -> list[FeedEntry] | None:
        """The next chunk, up to _BATCH changes (a hand-off larger than that is split); None at a stop
        with nothing queued. After the first change of a chunk, waits up to GATHER_S for more unless a
        barrier or a stop waits or a full chunk is queued already."""
        with self._changed:
            while not self._handed:
                if self._stopping:
                    return None
                self._changed.wait()
            gather = self._queued < _BATCH and not self._stopping and not self._barriers
        if gather:
            self._hurry.wait(GATHER_S)  # an event's wait sleeps: nothing polls meanwhile
        self._hurry.clear()
        chunk: list[FeedEntry] = []
        with self._changed:
            while self._handed and len(chunk) < _BATCH:
                handed = self._handed[0]
                room = _BATCH - len(chunk)
                if len(handed) <= room:
                    chunk.extend(self._handed.popleft())
                else:
                    chunk.extend(handed[:room])
                    self._handed[0] = handed[room:]
            self._queued -= len(chunk)
            self._changed.notify_all()  # a reader waiting for room
        return chunk

    def _finished(self, count: int) -> None:
        with self._changed:
            self._done += count
            self._changed.notify_all()

    def _run(self) -> None:
        while True:
            if self._giving_up.is_set():
                self._give_up_queued()
                return
            chunk = self._take()
            if chunk is None:
                return
            self._apply(chunk)
            self._finished(len(chunk))

    def _give_up_queued(self) -> None:
        """At a stop that timed out: what is still queued is counted as failed and logged, not tried."""
        with self._changed:
            given_up = self._queued
            self._handed.clear()
            self._queued = 0
        if given_up:
            self.failed += given_up
            self._count("failed", given_up)
            log.error("cases: %d queued violation changes were given up on at stop", given_up)
        self._finished(given_up)

    def _apply(self, batch: list[FeedEntry]) -> None:
        """The chunk in one transaction; when the store refuses it, one change at a time, so that only the
        change it refuses fails."""
        if not batch:
            return
        outcome = self._attempt(batch)
        if outcome == "refused" and len(batch) > 1:
            for entry in batch:
                self._counted([entry], self._attempt([entry]))
            return
        self._counted(batch, outcome)

    def _counted(self, entries: list[FeedEntry], outcome: str) -> None:
        if outcome == "applied":
            self._tally(len(entries), 0)
        else:
            self._tally(0, len(entries))

    def _tally(self, applied: int, failed: int) -> None:
        self.applied += applied
        self.failed += failed
        if self._metrics is not None:
            if applied:
                self._metrics.case_changes.labels("applied").inc(applied)
            if failed:
                self._metrics.case_changes.labels("failed").inc(failed)

    def _wait_to_retry(self, seconds: float) -> None:
        """Between two tries while the store is unreachable; returns early when the intake gives up."""
        self._giving_up.wait(seconds)

    def _attempt(self, entries: list[FeedEntry]) -> str:
        """Apply the changes in one transaction; while the store is unreachable, retry (the queue fills
        meanwhile) until it is back or the intake is given up on at stop. The outcome: applied, refused
        (the store or the service raised: a bug, a broken row) or given_up."""
        backoff_s = RETRY_MIN_S
        while True:
            if self._giving_up.is_set():
                return "given_up"
            try:
                self.service.violation_changes(
                    [entry.violation for entry in entries if entry.violation is not None])
                if backoff_s > RETRY_MIN_S:
                    log.info("cases: the case store is back")
                return "applied"
            except RelationalUnavailable as exc:
                if self._giving_up.is_set():
                    log.error("cases: %d changes from %s on were not applied: %s", len(entries),
                              entries[0].idempotency_key, exc)
                    return "given_up"
                if backoff_s == RETRY_MIN_S:
                    log.warning("cases: %s; retrying", exc)
                self._wait_to_retry(backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_MAX_S)
            except Exception:
                if len(entries) == 1:
                    log.exception("cases: the change %s was refused", entries[0].idempotency_key)
                else:
                    log.debug("cases: a chunk of %d changes was refused; applying them one at a time",
                              len(entries), exc_info=True)
                return "refused"
