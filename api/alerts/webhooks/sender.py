"""The HTTP side of webhook delivery: one POST, its answer's status, or why it failed.

`HttpSender` posts from the dispatcher's own event loop (api/alerts/webhooks/http1.py). `SenderProcess`
makes the same posts in a child process of its own: at a thousand and more deliveries a second the HTTP
client's work held the interpreter that the pipeline runs in. The dispatcher keeps
everything else (queues, ordering, retries, signing, the store, metrics); the child only sends, and answers
each request with the same outcome HttpSender gives. A request may be a sequence of posts to one URL
(`post_in_order`: a subscription's deliveries queued together), which the child makes one after the other
and answers together, so the deliveries after the first do not each wait for a round trip through the
dispatcher's loop. Requests and answers cross one pipe in batches (one
message per pass of either event loop), msgpack-encoded. This process's loop reads the answers when the
pipe is readable (no thread in between: here, under load, every hand-over between threads waits for the
interpreter's lock, which the pipeline holds); the child reads the requests on a thread of its own, so
that neither side can block the other for good while both write.

The child starts with the first subscription, not with the dispatcher: a city without subscriptions
never runs it. If the child dies, the requests it held fail as attempts ("the webhook sender process
ended"), retried like any failed attempt; the next request starts a new child. If this process dies, the
child sees its pipe close and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Protocol

import msgspec

from api.alerts.webhooks.destinations import DestinationPolicy, DestinationRefused, GuardedResolver
from api.alerts.webhooks.http1 import Http1Client
from core.child_process import READY, ChildLogs, spawn_child, start_child
from core.settings import WebhookSettings

log = logging.getLogger(__name__)

USER_AGENT = "citywatch-webhooks/1"
# Read and thrown away from an answer so its connection can be reused; never stored or shown.
_DRAIN_BYTES = 4096

# (status code or None, error or None, duration in ms or None when nothing was sent)
Outcome = tuple[int | None, str | None, int | None]


class Sender(Protocol):
    async def start(self) -> None: ...

    def prepare(self) -> None:
        """Called when a subscription exists: get ready to post, so that no delivery waits for it."""
        ...

    async def close(self) -> None: ...

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome: ...

    async def post_in_order(self, url: str, posts: Sequence[tuple[bytes, dict[str, str]]]) -> list[Outcome]:
        """The posts one after the other, each after the previous one's answer, until one fails: the
        outcomes of those made (the last one failed, or all were made)."""
        ...


class HttpSender:
    """POSTs through the guarded resolver (api/alerts/webhooks/http1.py), redirects not followed, within
    `timeout_s`; connections to a receiver are kept open and reused, and at most
    `connections_per_receiver` requests are in flight to one receiver: in a burst, a thousand
    subscriptions of one receiver take turns on its connections instead of each opening one (which costs
    a connection's set-up per subscription here and may be refused there)."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self.policy = DestinationPolicy(settings.allowed_private_networks)
        self._client: Http1Client | None = None
        # Per receiver, the requests that may be in flight to it (`connections_per_receiver`).
        self._turns: dict[tuple[str, str, int], asyncio.Semaphore] = {}

    async def start(self) -> None:
        self._client = Http1Client(GuardedResolver(self.policy), self.settings.timeout_s, USER_AGENT,
                                   drain_bytes=_DRAIN_BYTES)

    def prepare(self) -> None:
        """Ready since start()."""

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        assert self._client is not None
        timeout_s = self.settings.timeout_s
        started = time.monotonic()
        try:
            receiver = self._client.receiver(url)
            turn = self._turns.get(receiver)
            if turn is None:
                turn = self._turns[receiver] = asyncio.Semaphore(self.settings.connections_per_receiver)
            async with turn:
                # From here on it is the receiver's time (the timeout and the attempt's duration), not the
                # wait for one of its connections.
                started = time.monotonic()
                status = await self._client.post(url, body, headers)
        except TimeoutError:
            return None, f"no answer within {timeout_s:g} s", _elapsed_ms(started)
        except DestinationRefused as exc:
            return None, str(exc), None
        except OSError as exc:  # refused or broken connections, TLS failures, answers that are not HTTP
            return None, f"{type(exc).__name__}: {exc}"[:500], _elapsed_ms(started)
        duration_ms = _elapsed_ms(started)
        if 200 <= status < 300:
            return status, None, duration_ms
        if 300 <= status < 400:
            return status, f"HTTP {status}: redirects are not followed; subscribe the final URL", duration_ms
        return status, f"HTTP {status}", duration_ms

    async def post_in_order(self, url: str, posts: Sequence[tuple[bytes, dict[str, str]]]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for body, headers in posts:
            outcomes.append(await self.post(url, body, headers))
            if outcomes[-1][1] is not None:
                break
        return outcomes


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


class _Request(msgspec.Struct, array_like=True):
    request_id: int
    url: str
    posts: list[tuple[bytes, dict[str, str]]]


class _Answer(msgspec.Struct, array_like=True):
    request_id: int
    outcomes: list[tuple[int | None, str | None, int | None]]


_STOP = b"stop"
# Beyond the request timeout, how long to wait for the child's answer before failing the attempt.
_ANSWER_GRACE_S = 10.0


class SenderProcessError(RuntimeError):
    """The sender process could not be started."""


class SenderProcess:
    """HttpSender's posts made by a child process; `post` is called on the dispatcher's event loop."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self._conn: Connection | None = None
        self._child: BaseProcess | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[list[Outcome]]] = {}
        self._outgoing: list[_Request] = []
        # (when to give up waiting, request id), a heap: a sequence of posts is given longer than one post.
        self._deadlines: list[tuple[float, int]] = []
        self._expiry: asyncio.Task[None] | None = None
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(list[_Answer])

    @property
    def child_pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._expiry = self._loop.create_task(self._expire_forever())

    def prepare(self) -> None:
        """Start the child with the first subscription rather than the first request, so that no delivery
        waits the second or two a new interpreter takes; one that cannot start is logged, and the first
        request tries again."""
        if self._conn is not None and self._child is not None:
            return
        try:
            self._spawn()
        except SenderProcessError as exc:
            log.warning("%s; the first delivery tries again", exc)

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
        conn, child = self._conn, self._child
        self._conn = self._child = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send_bytes(_STOP)
        if child is not None:
            await asyncio.to_thread(child.join, 10)
            if child.is_alive():
                child.kill()
        if conn is not None:
            self._close_pipe(conn)
        self._fail_waiting("the webhook sender process was stopped")

    def _spawn(self) -> None:
        ours, child = spawn_child(_child_main, (self.settings,), name="citywatch-webhooks",
                                  what="webhook sender process", error=SenderProcessError)
        self._conn, self._child = ours, child
        assert self._loop is not None
        self._loop.add_reader(ours.fileno(), self._read_answers, ours)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        return (await self.post_in_order(url, [(body, headers)]))[0]

    async def post_in_order(self, url: str, posts: Sequence[tuple[bytes, dict[str, str]]]) -> list[Outcome]:
        """A request that fails as a whole (the child ended, or never answered) is told as a failure of its
        first post, the others not made: a post the child did make is then made again, which the
        idempotency key lets a receiver recognise (at least once)."""
        if self._conn is None or self._child is None:  # the first request, or the child's pipe closed
            # What a dead child held is lost.
            self._conn = None
            self._fail_waiting("the webhook sender process ended")
            try:
                self._spawn()
            except SenderProcessError as exc:
                return [(None, str(exc), None)]
        request_id = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Outcome]] = loop.create_future()
        self._waiting[request_id] = future
        # The posts are made one after the other, each within the timeout.
        answer_within_s = self.settings.timeout_s * len(posts) + _ANSWER_GRACE_S
        heapq.heappush(self._deadlines, (loop.time() + answer_within_s, request_id))
        if not self._outgoing:
            loop.call_soon(self._send_outgoing)
        self._outgoing.append(_Request(request_id, url, list(posts)))
        try:
            return await future
        finally:
            self._waiting.pop(request_id, None)

    async def _expire_forever(self) -> None:
        """The child answers every request within its timeout; one it never answers (a hung child) fails
        here, checked once a second rather than with a timer per request."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            while self._deadlines and self._deadlines[0][0] <= now:
                _, request_id = heapq.heappop(self._deadlines)
                self._answer(request_id, [(None, "no answer from the webhook sender process within "
                                                 f"{self.settings.timeout_s:g} s a post and "
                                                 f"{_ANSWER_GRACE_S:g} s", None)])

    def _send_outgoing(self) -> None:
        batch, self._outgoing = self._outgoing, []
        conn = self._conn
        try:
            if conn is None:
                raise OSError("no sender process")
            conn.send_bytes(self._encoder.encode(batch))
        except OSError as exc:
            for request in batch:
                self._answer(request.request_id, [(None, f"the webhook sender process ended ({exc})", None)])

    def _read_answers(self, conn: Connection) -> None:
        """On the loop, when the pipe is readable: the batches of answers waiting, or the child's end."""
        try:
            while conn.poll():
                self._answered(conn.recv_bytes())
        except (EOFError, OSError):
            self._child_gone(conn)

    def _answered(self, data: bytes) -> None:
        for answer in self._decoder.decode(data):
            self._answer(answer.request_id, answer.outcomes)

    def _answer(self, request_id: int, outcomes: list[Outcome]) -> None:
        future = self._waiting.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(outcomes)

    def _child_gone(self, conn: Connection) -> None:
        self._close_pipe(conn)
        if conn is not self._conn:
            return  # an earlier child's pipe, already replaced or closed
        log.warning("the webhook sender process ended (exit code %s); %d requests in flight are failed "
                    "attempts, and a new process takes the next ones",
                    self._child.exitcode if self._child is not None else None, len(self._waiting))
        self._conn = None
        self._fail_waiting("the webhook sender process ended")

    def _close_pipe(self, conn: Connection) -> None:
        if self._loop is not None and not conn.closed:
            with contextlib.suppress(ValueError, OSError):  # the loop or the pipe closed already
                self._loop.remove_reader(conn.fileno())
        with contextlib.suppress(OSError):
            conn.close()

    def _fail_waiting(self, error: str) -> None:
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_result([(None, error, None)])


def _child_main(conn: Connection, settings: WebhookSettings, logs: ChildLogs) -> None:
    start_child(logs)
    asyncio.run(_serve(conn, settings))


async def _serve(conn: Connection, settings: WebhookSettings) -> None:
    sender = HttpSender(settings)
    await sender.start()
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()
    encoder = msgspec.msgpack.Encoder()
    decoder = msgspec.msgpack.Decoder(list[_Request])
    answers: list[_Answer] = []
    tasks: set[asyncio.Task[None]] = set()

    def send_answers() -> None:
        batch = answers.copy()
        answers.clear()
        with contextlib.suppress(OSError):  # the parent is gone: the reading thread ends the loop
            conn.send_bytes(encoder.encode(batch))

    async def post(request: _Request) -> None:
        outcomes = await sender.post_in_order(request.url, request.posts)
        if not answers:
            loop.call_soon(send_answers)
        answers.append(_Answer(request.request_id, outcomes))

    def received(data: bytes) -> None:
        for request in decoder.decode(data):
            task = loop.create_task(post(request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def stop() -> None:
        if not stopped.done():
            stopped.set_result(None)

    def read_requests() -> None:
        """On a thread of its own, so that the parent's requests are always taken from the pipe, even while
        this loop waits to write answers (neither side can then block the other for good)."""
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                data = _STOP  # the parent is gone
            if data == _STOP:
                loop.call_soon_threadsafe(stop)
                return
            loop.call_soon_threadsafe(received, data)

    conn.send_bytes(READY)
    threading.Thread(target=read_requests, name="citywatch-webhook-requests", daemon=True).start()
    try:
        await stopped
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sender.close()
