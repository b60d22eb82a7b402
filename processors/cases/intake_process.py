"""The case intake of `citywatch up` with the case store's work in a process of its own.

In one process the intake's thread competes with ingest and the rules for the interpreter's lock: at 1,000
violation changes/s its routing, SLA clock and SQLite transactions cost the pipeline about a tenth of its
events/s (BENCHMARKS.md, "Case intake"). Here the feed's hand-off, the bounded queue, the chunks, the
barrier and the counts stay as in CaseIntake, in this process; only applying a chunk moves: the worker
thread sends the chunk's violations (msgpack) to a child process, which applies them to the case store
exactly as CaseIntake does (one transaction a chunk; a refused chunk one change at a time; retries while
the store is unreachable) and answers how many it applied and how many failed. The worker waits for the
answer without the interpreter's lock, so the pipeline's threads run meanwhile.

Each chunk is applied once: the child answers after its transaction committed. If the child dies (killed,
out of memory), the chunk it held is counted as failed and logged; a new child takes the next chunk, and
the next start of `citywatch up` re-derives what was lost from the violation store
(CaseService.reconcile). If this process dies, the child sees its pipe close and exits.

The child yields the CPU to every other process while it keeps up, and takes a niced share of it while it
is behind: YIELDING_UNTIL below.
"""

from __future__ import annotations

import contextlib
import logging
import os
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import msgspec

from core.child_process import READY, ChildLogs, spawn_child, start_child
from core.models import Violation
from core.settings import Settings
from processors.cases.intake import CaseIntake
from processors.cases.routing import CaseRouter
from processors.cases.service import CaseService
from processors.outputs.feed import FeedEntry
from store.cases import CaseStore

log = logging.getLogger(__name__)

_GIVE_UP = b"give-up"
_STOP = b"stop"
_YIELD = b"yield"
# How often the worker looks whether the intake is giving up while the child applies a chunk.
_POLL_S = 0.2
# The child runs at a lower CPU priority than the pipeline: when ingest, the rules and the broker want
# every core (a burst, a machine of two), the cases wait a little (their queue holds the changes) instead
# of taking CPU from ingest; on a machine with a core to spare the child gets it all the same.
CHILD_NICENESS = 10
# While it keeps up, the child is in Linux's idle scheduling class (SCHED_IDLE): any other process that
# wants a core gets it first. At nice 10 its ~0.1 core at 1,000 changes/s doubled ingest's p90
# publish-to-stored latency on two cores (medians of ten pairs); in the idle class, with larger chunks,
# the tail moves less (BENCHMARKS.md, "Case intake"). A process in that class gets next to nothing while
# the cores are full, though, and may not leave it without privileges, so once this many changes are
# queued (ten seconds at 1,000/s) the child is replaced by one at CHILD_NICENESS that goes back to the idle
# class when the queue is down to CAUGHT_UP.
YIELDING_UNTIL = 10_000
CAUGHT_UP = 1_000


class CaseIntakeProcessError(RuntimeError):
    """The child process could not be started."""


class CaseIntakeProcess(CaseIntake):
    def __init__(self, service: CaseService, settings: Settings, data_dir: Path,
                 capacity: int = 100_000, *, yielding_until: int = YIELDING_UNTIL,
                 caught_up: int = CAUGHT_UP) -> None:
        super().__init__(service, capacity)
        self._settings = settings
        self._data_dir = data_dir
        self._child: BaseProcess | None = None
        self._conn: Connection | None = None
        self._encoder = msgspec.msgpack.Encoder()
        self._yielding_until = yielding_until
        self._caught_up = caught_up
        self._child_yields = False  # whether the child is in the idle scheduling class

    @property
    def child_pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def start(self) -> None:
        self._spawn()
        super().start()

    def stop(self, timeout_s: float = 10.0) -> None:
        super().stop(timeout_s)
        self._stop_child(timeout_s)

    def _spawn(self, yields: bool = True) -> None:
        # Ready once it opened the case store: a child that cannot is an error at start, not a chunk later.
        self._conn, self._child = spawn_child(_child_main, (self._settings, self._data_dir, yields),
                                              name="citywatch-cases", what="case intake process",
                                              error=CaseIntakeProcessError)
        self._child_yields = yields and _CAN_YIELD

    def _child_running(self) -> bool:
        return self._conn is not None and self._child is not None and self._child.is_alive()

    def _keep_pace(self) -> None:
        """Between chunks: a yielding child that fell behind is replaced by one with a share of the CPU; one
        with a share goes back to yielding once it has caught up."""
        if self._child_yields and self._queued >= self._yielding_until:
            log.info("cases: %d violation changes queued; the case intake process takes a share of the CPU "
                     "until it catches up", self._queued)
            # Between chunks the child holds nothing uncommitted; in the idle class on full cores it may
            # take long to read the stop, so it is given a second, then killed.
            self._stop_child(timeout_s=1.0)
            self._spawn(yields=False)
        elif not self._child_yields and _CAN_YIELD and self._conn is not None \
                and self._queued <= self._caught_up:
            with contextlib.suppress(OSError):  # a child that died: the chunk's hand-over finds out
                self._conn.send_bytes(_YIELD)
            self._child_yields = True
            log.info("cases: the case intake process caught up; it yields the CPU again")

    def _stop_child(self, timeout_s: float = 10.0) -> None:
        conn, child = self._conn, self._child
        self._conn = self._child = None
        if conn is not None:
            with contextlib.suppress(OSError):  # the child is gone already
                conn.send_bytes(_STOP)
        if child is not None:
            child.join(timeout_s)
            if child.is_alive():
                child.kill()
                child.join(timeout_s)
        if conn is not None:
            conn.close()

    def _apply(self, batch: list[FeedEntry]) -> None:
        if not batch:
            return
        # A child found dead when the chunk is handed over (killed between chunks: the pipe tells only now)
        # is replaced and given the chunk again; one that dies again fails the chunk. Applying a change
        # twice changes nothing (docs/cases.md), so a chunk the first child had half applied is safe to give.
        for last_try in (False, True):
            if self._child_running():
                try:
                    self._keep_pace()
                except CaseIntakeProcessError as exc:
                    log.error("cases: a case intake process with a share of the CPU did not start: %s", exc)
            if not self._child_running():
                try:
                    self._spawn()
                except CaseIntakeProcessError as exc:
                    log.error("cases: %d changes from %s on were not applied: %s", len(batch),
                              batch[0].idempotency_key, exc)
                    self._tally(0, len(batch))
                    return
            assert self._conn is not None
            try:
                self._conn.send_bytes(self._encoder.encode([entry.violation for entry in batch]))
                told_to_give_up = False
                while not self._conn.poll(_POLL_S):
                    if self._giving_up.is_set() and not told_to_give_up:
                        self._conn.send_bytes(_GIVE_UP)
                        told_to_give_up = True
                applied, failed = (int(count) for count in self._conn.recv_bytes().split())
            except (EOFError, OSError) as exc:
                self._conn = None
                if not last_try:
                    log.warning("cases: the case intake process had ended (%s); a new one takes the %d "
                                "changes from %s on", exc, len(batch), batch[0].idempotency_key)
                    continue
                log.error("cases: the case intake process ended while applying %d changes from %s on (%s); "
                          "they are counted as failed, and the next start re-derives them from the violation "
                          "store", len(batch), batch[0].idempotency_key, exc)
                self._tally(0, len(batch))
                return
            self._tally(applied, failed)
            return


class _ChildIntake(CaseIntake):
    """The applying half, in the child: CaseIntake's chunk logic, told to give up through the pipe."""

    def __init__(self, service: CaseService, conn: Connection) -> None:
        super().__init__(service)
        self._conn = conn

    def _wait_to_retry(self, seconds: float) -> None:
        if self._conn.poll(seconds) and self._conn.recv_bytes() == _GIVE_UP:
            self._giving_up.set()

    def apply(self, violations: list[Violation]) -> tuple[int, int]:
        self._giving_up.clear()
        applied, failed = self.applied, self.failed
        self._apply([FeedEntry(0, violation, 0) for violation in violations])
        return self.applied - applied, self.failed - failed


_CAN_YIELD = hasattr(os, "SCHED_IDLE")  # Linux


def _yield_cpu() -> None:
    """This process into the idle scheduling class: it runs when no other process wants the core. Where
    that is not allowed (a sandbox's system call filter), it stays at CHILD_NICENESS, as it says."""
    if not _CAN_YIELD:
        return
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError as exc:
        log.warning("cases: the case intake process could not yield the CPU (%s); it runs at nice %d",
                    exc, CHILD_NICENESS)


def _child_main(conn: Connection, settings: Settings, data_dir: Path, yields: bool, logs: ChildLogs) -> None:
    # The parent stops it after the queue drained (start_child), or it sees the pipe close.
    start_child(logs)
    os.nice(CHILD_NICENESS)
    if yields:
        _yield_cpu()
    store = CaseStore.open(settings.relational, data_dir)
    try:
        service = CaseService(store, CaseRouter(settings.cases, settings.traffic.time_zone))
        intake = _ChildIntake(service, conn)
        decoder = msgspec.msgpack.Decoder(list[Violation])
        conn.send_bytes(READY)
        while True:
            try:
                message = conn.recv_bytes()
            except (EOFError, OSError):
                return  # the parent is gone
            if message == _STOP:
                return
            if message == _GIVE_UP:
                continue  # a chunk already answered
            if message == _YIELD:
                _yield_cpu()
                continue
            applied, failed = intake.apply(decoder.decode(message))
            try:
                conn.send_bytes(f"{applied} {failed}".encode())
            except OSError:
                return  # the parent is gone: what was applied is in the store
    finally:
        store.close()
