"""The webhook dispatcher of `citywatch up` in a process of its own.

Beside the pipeline, the dispatcher's fan-out (each change matched against the subscriptions, its body
encoded, a delivery row stored per match), the signing of each request and the writing of the outcomes
held a fifth of the interpreter that runs ingest's hand-off and the rules (BENCHMARKS.md, "1,000 webhooks
and 500 streams"): at 1,500 deliveries a second a delivery waited seconds for that interpreter, and the
pipeline for the dispatcher. Here the whole dispatcher (api/alerts/webhooks/dispatcher.py: queues,
order, retries, signing, destination checks, the delivery log, disclosures audited) runs in a child
process with its own loop and HTTP client; this process only hands it the feed's changes.

This process keeps what the API calls (WebhookDispatcher's management methods): a subscription created,
changed, rotated or deleted, or a delivery queued again, is written to the webhook store here as before,
and the child is told to read the store again (`WebhookDispatcher.sync`), in order with the changes handed
to it. The child's delivery counts reach this process's /metrics.

Nothing handed over is lost to a child that dies: the changes go in numbered messages, kept here until the
child answers that their delivery rows are stored, and are sent again to the next child (a delivery row is
unique per subscription and change, so a change stored twice is queued once). Deliveries stored but not
yet made are pending rows, which a new child takes up at its start; a request the dead child had in
flight is made again (at least once, as after a restart). If this process dies, the child sees its pipe
close and exits.

The child starts with the first subscription, as the sender process does: a city without subscriptions
never runs it, and changes published while there is none are not kept (they would match nothing).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import msgspec

from api.access.control import AccessControl
from api.alerts.filters import ViolationFilter
from api.alerts.webhooks.dispatcher import WebhookDispatcher
from api.alerts.webhooks.store import Subscription, WebhookStore
from core.child_process import READY, ChildLogs, spawn_child, start_child
from core.metrics import ForwardedMetrics, Metrics, samples_of
from core.settings import Settings, WebhookSettings
from processors.outputs.feed import FeedEntry, ViolationFeed

log = logging.getLogger(__name__)

# parent -> child: kind, then msgpack (number, changes). A sync has no changes.
_CHANGES = b"C"
_SYNC = b"S"
_STOP = b"X"
# child -> parent: the highest number whose changes are stored; the child's counts.
_STORED = b"A"
_METRICS = b"M"

# The shortest time between two starts of a child (one that cannot start is tried again this often).
RESTART_S = 1.0
# How often the child sends its counts.
REPORT_S = 0.5
# How long a stopping child may take to write what it has done.
STOP_S = 30.0
# Messages the child reads before it answers which are stored (it answers sooner when none are waiting).
_READ_AHEAD = 64
# Changes kept for a child that has not stored them. Only a child that cannot start for a long time (its
# store unreachable) reaches this: the oldest are then given up, with an error in the log.
MAX_UNSTORED = 100_000
# The child's metrics sent on to this process's registry; attempt durations go as they are observed.
_FORWARDED = ("webhook_deliveries", "webhook_dead_letters", "webhook_pending")


class WebhookDispatcherProcessError(RuntimeError):
    """The dispatcher's child process could not be started."""


class WebhookDispatcherProcess(WebhookDispatcher):
    """Parent side: the management methods act on the store here; deliveries are made by the child."""

    def __init__(self, store: WebhookStore, settings: Settings, feed: ViolationFeed, access: AccessControl,
                 data_dir: Path, *, violation_types: frozenset[str] | None = None) -> None:
        super().__init__(store, settings.alerts.webhooks, feed, access, violation_types=violation_types)
        self._app_settings = settings
        self._data_dir = data_dir
        self._forwarded = ForwardedMetrics(self.metrics)
        self._encoder = msgspec.msgpack.Encoder()
        self._cond = threading.Condition()
        # Numbered changes (a list) and syncs (None) not yet sent; sent messages not yet stored by the child.
        self._outbox: deque[tuple[int, list[FeedEntry] | None]] = deque()
        self._unstored: deque[tuple[int, int, bytes]] = deque()  # (number, changes, message)
        self._unstored_changes = 0
        self._numbered = 0
        self._stored = 0
        self._wanted = False  # a subscription exists: the child runs
        self._stopping = False
        self._child_lost = False
        self._conn: Connection | None = None
        self._child: BaseProcess | None = None
        self._reader: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._last_spawn = 0.0

    @property
    def sender_pid(self) -> int | None:
        """The process id of the child that makes the deliveries (None: none running)."""
        child = self._child
        return child.pid if child is not None and child.is_alive() else None

    def report_to(self, metrics: Metrics) -> None:
        # The pending deliveries are the child's: its gauge's value is sent on (_FORWARDED).
        self.metrics = metrics
        self._forwarded = ForwardedMetrics(metrics)

    # Lifecycle

    def start(self) -> None:
        """With subscriptions, the child is started now: one that cannot start is an error at start."""
        self._wanted = bool(self.store.subscriptions())
        if self._wanted:
            self._start_child()
        self._writer = threading.Thread(target=self._hand_off, name="webhooks-hand-off", daemon=True)
        self._writer.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """The changes handed over so far are sent; the child writes what it has done and exits (what it
        had not delivered stays pending, for the next start)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._writer is not None:
            self._writer.join(timeout_s + STOP_S)
            self._writer = None

    # What the API and the feed call

    def create(self, *, url: str, filter: ViolationFilter, secret: str | None, description: str,
               owner_key_id: str, plates: bool, max_changes_per_post: int = 1) -> Subscription:
        # Wanted before the subscription is stored: a change published after it was created is kept.
        with self._cond:
            self._wanted = True
            self._cond.notify_all()
        return super().create(url=url, filter=filter, secret=secret, description=description,
                              owner_key_id=owner_key_id, plates=plates,
                              max_changes_per_post=max_changes_per_post)

    def hand_over(self, entries: Sequence[FeedEntry]) -> None:
        with self._cond:
            if not self._wanted or self._stopping:
                return  # no subscription: nothing to deliver
            self._numbered += 1
            self._outbox.append((self._numbered, list(entries)))
            self._cond.notify_all()

    def sync(self) -> None:
        self._queue_sync()

    def _call(self, function: Callable[..., object], *args: object) -> None:
        # The management methods end here ("run this on the dispatcher's loop"): that loop is the child's,
        # which reads the subscriptions and pending deliveries from the store again.
        self._queue_sync()

    def barrier(self, timeout_s: float = 30.0) -> None:
        """Return once every change handed over before this call is in the webhook store."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("the webhook dispatcher is not running")
            if not self._wanted:
                return
            number = self._queue_sync_locked()
            if not self._cond.wait_for(lambda: self._stored >= number, timeout_s):
                raise TimeoutError(f"the webhook dispatcher process did not store the changes within "
                                   f"{timeout_s:g} s")

    def _queue_sync(self) -> None:
        with self._cond:
            if self._wanted and not self._stopping:
                self._queue_sync_locked()

    def _queue_sync_locked(self) -> int:
        self._numbered += 1
        self._outbox.append((self._numbered, None))
        self._cond.notify_all()
        return self._numbered

    # The hand-off thread: messages to the child, a new child when one is lost

    def _hand_off(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or bool(self._outbox) or self._child_lost
                                    or (self._wanted and self._conn is None))
                items = list(self._outbox)
                self._outbox.clear()
                stopping = self._stopping
                lost, self._child_lost = self._child_lost, False
            messages = self._keep(items)
            if stopping and self._conn is None:
                self._stop_child()  # none running: it says how many changes were not stored
                return
            if self._conn is None or lost:
                if not self._restart():
                    continue
                with self._cond:  # everything not yet stored
                    messages = [message for _, _, message in self._unstored]
            self._send(messages)
            if stopping:
                self._stop_child()
                return

    def _keep(self, items: list[tuple[int, list[FeedEntry] | None]]) -> list[bytes]:
        """The items as messages (consecutive changes in one), kept until the child has stored them."""
        messages: list[bytes] = []
        changes: list[FeedEntry] = []
        last = 0
        for index, (number, entries) in enumerate(items):
            if entries is not None:
                changes.extend(entries)
                last = number
                continue
            if changes:
                messages.append(self._message(_CHANGES, last, changes))
                changes = []
            if index + 1 < len(items) and items[index + 1][1] is None:
                continue  # syncs in a row are one (each reads every subscription): the last one answers
            messages.append(self._message(_SYNC, number, []))
        if changes:
            messages.append(self._message(_CHANGES, last, changes))
        with self._cond:
            given_up = 0
            while self._unstored_changes > MAX_UNSTORED:
                _, count, _ = self._unstored.popleft()
                self._unstored_changes -= count
                given_up += count
        if given_up:
            log.error("webhooks: %d violation changes not yet stored by the webhook dispatcher process are "
                      "no longer kept to be sent again (more than %d wait): if it is not running, their "
                      "deliveries are lost", given_up, MAX_UNSTORED)
        return messages

    def _message(self, kind: bytes, number: int, changes: list[FeedEntry]) -> bytes:
        message = kind + self._encoder.encode((number, changes))
        with self._cond:
            self._unstored.append((number, len(changes), message))
            self._unstored_changes += len(changes)
        return message

    def _send(self, messages: list[bytes]) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            for message in messages:
                conn.send_bytes(message)
        except OSError:
            pass  # the child is gone: its reader says so, and the next child is sent these again

    def _restart(self) -> bool:
        """A new child (the last one, if any, ended); False when it could not start (tried again later)."""
        wait_s = self._last_spawn + RESTART_S - time.monotonic()
        if wait_s > 0:
            with self._cond:
                if self._cond.wait_for(lambda: self._stopping, wait_s):
                    return False
        self._end_child()
        try:
            self._start_child()
        except WebhookDispatcherProcessError as exc:
            log.error("webhooks: %s; tried again in %.0f s (%d changes wait)", exc, RESTART_S,
                      self._unstored_changes)
            return False
        return True

    def _start_child(self) -> None:
        self._last_spawn = time.monotonic()
        self._forwarded.restart()  # a new child counts from zero
        conn, child = spawn_child(_child_main, (self._app_settings, self._data_dir, self.feed.epoch,
                                                self.violation_types),
                                  name="citywatch-webhooks", what="webhook dispatcher process",
                                  error=WebhookDispatcherProcessError)
        self._conn, self._child = conn, child
        self._reader = threading.Thread(target=self._read, args=(conn,), name="webhooks-answers",
                                        daemon=True)
        self._reader.start()

    def _read(self, conn: Connection) -> None:
        decoder = msgspec.msgpack.Decoder(tuple[list[tuple[str, dict[str, str], float]], list[float]])
        while True:
            try:
                message = conn.recv_bytes()
            except (EOFError, OSError):
                break
            kind, body = message[:1], memoryview(message)[1:]
            if kind == _STORED:
                self._stored_up_to(int(bytes(body)))
            elif kind == _METRICS:
                samples, durations = decoder.decode(body)
                self._forwarded.apply(samples)
                for seconds in durations:
                    self.metrics.webhook_attempt_seconds.observe(seconds)
        with self._cond:
            if self._conn is conn and not self._stopping:
                child = self._child
                log.warning("webhooks: the webhook dispatcher process ended (exit code %s); a new one takes "
                            "its %d unstored changes and the pending deliveries",
                            None if child is None else child.exitcode, self._unstored_changes)
                self._child_lost = True
                self._cond.notify_all()

    def _stored_up_to(self, number: int) -> None:
        with self._cond:
            self._stored = max(self._stored, number)
            while self._unstored and self._unstored[0][0] <= number:
                _, count, _ = self._unstored.popleft()
                self._unstored_changes -= count
            self._cond.notify_all()

    def _end_child(self) -> None:
        """The last child ended (or is ended now) and its answers read to their end."""
        conn, child, reader = self._conn, self._child, self._reader
        self._conn = self._child = self._reader = None
        if child is not None:
            if child.is_alive():
                child.kill()
            child.join(STOP_S)
        if reader is not None:
            reader.join(STOP_S)
        if conn is not None:
            conn.close()

    def _stop_child(self) -> None:
        conn, child = self._conn, self._child
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send_bytes(_STOP)
        if child is not None:
            child.join(STOP_S)
            if child.is_alive():
                log.error("webhooks: the webhook dispatcher process did not stop within %.0f s; killing it "
                          "(what it had not recorded is delivered again at the next start)", STOP_S)
        self._end_child()
        if self._unstored_changes:
            log.warning("webhooks: %d violation changes handed over at the stop were not stored as "
                        "deliveries", self._unstored_changes)


class _ChildDispatcher(WebhookDispatcher):
    """The dispatcher in the child: as in-process, with the attempt durations kept for the parent."""

    def __init__(self, store: WebhookStore, settings: WebhookSettings, feed: ViolationFeed,
                 access: AccessControl, violation_types: frozenset[str]) -> None:
        super().__init__(store, settings, feed, access, violation_types=violation_types)
        self.durations: deque[float] = deque()

    def _count_attempt(self, error: str | None, duration_ms: int | None, changes: int = 1) -> None:
        super()._count_attempt(error, duration_ms, changes)
        if duration_ms is not None:
            self.durations.append(duration_ms / 1000)

    def taken_durations(self) -> list[float]:
        # popleft against the loop's appends: none lost between two reports.
        return [self.durations.popleft() for _ in range(len(self.durations))]


def _child_main(conn: Connection, settings: Settings, data_dir: Path, epoch: int,
                violation_types: frozenset[str], logs: ChildLogs) -> None:
    start_child(logs)
    store = WebhookStore.open(settings.relational, data_dir)
    access = AccessControl.in_directory(data_dir, settings.api, settings.relational)
    # Only its cursors are used: the changes come through the pipe, with the parent's sequence numbers.
    feed = ViolationFeed(1, epoch=epoch)
    metrics = Metrics()
    dispatcher = _ChildDispatcher(store, settings.alerts.webhooks, feed, access, violation_types)
    dispatcher.report_to(metrics)
    try:
        dispatcher.start()
        conn.send_bytes(READY)
        _serve(conn, dispatcher, metrics)
    except (EOFError, OSError):
        pass  # the parent is gone
    finally:
        dispatcher.stop()
        store.close()
        access.close()


def _serve(conn: Connection, dispatcher: _ChildDispatcher, metrics: Metrics) -> None:
    decoder = msgspec.msgpack.Decoder(tuple[int, list[FeedEntry]])
    encoder = msgspec.msgpack.Encoder()
    reported = 0.0
    stopping = False
    while not stopping:
        highest: int | None = None
        read = 0
        sync = False  # syncs read since the last changes: one sync does for them all
        while read < _READ_AHEAD and conn.poll(REPORT_S if read == 0 else 0):
            message = conn.recv_bytes()
            if message == _STOP:
                stopping = True  # what was read before it is stored and answered first
                break
            number, entries = decoder.decode(memoryview(message)[1:])
            if message[:1] == _SYNC:
                sync = True
            else:
                if sync:
                    dispatcher.sync()
                    sync = False
                dispatcher.hand_over(entries)
            highest = number
            read += 1
        if sync:
            dispatcher.sync()
        if highest is not None:
            dispatcher.barrier()  # the fan-outs and syncs before it ran: their delivery rows are stored
            conn.send_bytes(_STORED + str(highest).encode())
        now = time.monotonic()
        if stopping or now - reported >= REPORT_S:  # the last counts before it exits
            reported = now
            conn.send_bytes(_METRICS + encoder.encode((samples_of(metrics, _FORWARDED),
                                                       dispatcher.taken_durations())))
