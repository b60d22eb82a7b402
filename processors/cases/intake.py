"""Violation changes into cases, off the pipeline's thread: a feed listener with its own worker.

The feed calls listeners on the publishing thread (the processor's, or the api role's topic reader), so
the listener only enqueues into a bounded queue; the worker applies the changes to the case store in
order. In `citywatch up` a full queue drops the change (counted and logged, as the alert outputs do), so
the processor never waits for the database. The api role's violations reader can wait instead
(`wait_when_full`): the topic keeps the changes, and its reader only falls behind. It calls `barrier()`,
which waits until everything enqueued so far is applied, before it commits its offsets, so a restart
never skips a change the cases had not taken yet; the barrier raises when the intake gave changes up at a
stop, so their offsets are not committed either.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Sequence

from core.metrics import Metrics
from core.models import ViolationStatus
from processors.cases.service import CaseService
from processors.outputs.feed import FeedEntry
from store.relational import RelationalUnavailable

log = logging.getLogger(__name__)

_STOP = object()
_BATCH = 500
# After the first change of a chunk, the worker waits this long for more before applying it (unless a
# barrier or a stop is waiting): a chunk costs a transaction and a few queries whatever its size, so at
# 1,000 changes/s chunks of ~100 cost a third less CPU per change than the few it would find otherwise.
GATHER_S = 0.1
# While the case store is unreachable a change is retried, waiting twice as long each time up to the max.
RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0


class IntakeStopped(RuntimeError):
    """Changes handed to the intake were given up on at a stop."""


class CaseIntake:
    def __init__(self, service: CaseService, capacity: int = 100_000, *,
                 wait_when_full: bool = False) -> None:
        self.service = service
        self._wait_when_full = wait_when_full
        self._queue: queue.Queue[object] = queue.Queue(capacity)
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
        metrics.case_intake_queue.set_function(self._queue.qsize)

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.case_changes.labels(outcome).inc()

    def __call__(self, entries: Sequence[FeedEntry]) -> None:
        may_take = self.service.router.may_take
        for entry in entries:
            violation = entry.violation
            if violation is None:
                continue  # a case event: made by the cases, nothing for them to apply
            if violation.status is ViolationStatus.OPEN and not may_take(violation.type):
                continue  # no route takes its type. A clearing is always queued: only the store knows
                # whether its violation joined a case (under the routes of an earlier start, say).
            if self._wait_when_full:
                self._queue.put(entry)
                continue
            try:
                self._queue.put_nowait(entry)
            except queue.Full:
                self.dropped += 1
                self._count("dropped")
                if self.dropped == 1 or self.dropped % 1000 == 0:
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
        with contextlib.suppress(queue.Full):  # full while the store is down: given up on below
            self._queue.put(_STOP, timeout=timeout_s)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._giving_up.set()
            self._thread.join(timeout_s)
        self._thread = None

    def barrier(self) -> None:
        """Return once every change enqueued before the call has been applied (or failed); raise
        IntakeStopped when the intake gave up on changes at a stop (the store was still unreachable), so
        that the caller does not commit the offsets of changes the cases never took."""
        if self._thread is not None:
            self._hurry.set()
            self._queue.join()
        if self._giving_up.is_set():
            raise IntakeStopped("the case intake stopped before the case store took every change")

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch: list[FeedEntry] = []
            stop = item is _STOP
            if isinstance(item, FeedEntry):
                batch.append(item)
                if self._queue.qsize() < _BATCH:
                    self._hurry.wait(GATHER_S)  # an event's wait sleeps: nothing polls meanwhile
                self._hurry.clear()
            taken = 1
            while not stop and len(batch) < _BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                taken += 1
                if more is _STOP:
                    stop = True
                elif isinstance(more, FeedEntry):
                    batch.append(more)
            self._apply(batch)
            for _ in range(taken):
                self._queue.task_done()
            if stop:
                return
            if self._giving_up.is_set():
                self._give_up_queued()
                return

    def _give_up_queued(self) -> None:
        """At a stop that timed out: what is still queued is counted as failed and logged, not tried."""
        given_up = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, FeedEntry):
                given_up += 1
                self.failed += 1
                self._count("failed")
            self._queue.task_done()
        if given_up:
            log.error("cases: %d queued violation changes were given up on at stop", given_up)

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
            self.applied += len(entries)
        else:
            self.failed += len(entries)
        if self._metrics is not None:
            self._metrics.case_changes.labels("applied" if outcome == "applied" else "failed").inc(
                len(entries))

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
                self._giving_up.wait(backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_MAX_S)
            except Exception:
                if len(entries) == 1:
                    log.exception("cases: the change %s was refused", entries[0].idempotency_key)
                else:
                    log.debug("cases: a chunk of %d changes was refused; applying them one at a time",
                              len(entries), exc_info=True)
                return "refused"
