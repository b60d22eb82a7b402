"""Live streams of violation state changes: Server-Sent Events and WebSocket, with filters and resume.

Each client has a pump task that reads the shared feed from the client's cursor, filters and masks,
and puts messages into the client's own small bounded queue (CLIENT_QUEUE messages); a sender task
writes the queue to the socket. The pipeline never waits for either: the feed is only read. When a
client reads slower than its changes arrive, its queue fills and its pump waits; once the pump is
more than `stream_max_lag` changes behind the newest, the client is sent an error `too_slow` and
disconnected (even while its socket is blocked, because the pump runs apart from the sender). It can
reconnect with its last id and resume while that id is still in the window. Memory per client is
bounded by the queue, whatever the number of clients.

Every message carries `id` = `<feed epoch>-<sequence>`. Reconnect with `Last-Event-ID: <id>` (SSE
clients do this on their own) or `?since=<id>`; `since=earliest` starts from the oldest change held.
Without either the stream starts with the next change. An id older than the window, or from before a
restart, gets an error `cursor_expired` instead of a silent gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope

from api.access.control import AccessControl, AuthError
from api.access.deps import ViolationReader, get_access, token_of
from api.access.keys import ApiKey, Scope
from api.alerts.filters import ViolationFilter, filter_from_query
from api.alerts.waiter import FeedWaiter
from api.services import ApiServices
from processors.outputs.feed import CursorExpired, InvalidFeedCursor, ViolationFeed

log = logging.getLogger(__name__)

router = APIRouter(tags=["streams"])

READ_BATCH = 500
CLIENT_QUEUE = 256
SinceParam = Annotated[str | None, Query(
    description="Resume after this id (the `id` of the last message received), or `earliest`.")]


class StreamEnded(Exception):
    """The stream cannot go on; `code` and `detail` say why (sent to the client before closing)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# A queue item: (id, message), or None for "idle for a heartbeat interval".
StreamItem = tuple[str, dict[str, Any]] | None
_END_TIMEOUT_S = 1.0


@dataclass
class StreamSession:
    """One client's position in the feed and what it wants to see."""

    feed: ViolationFeed
    waiter: FeedWaiter
    access: AccessControl
    key: ApiKey
    filter: ViolationFilter
    max_lag: int
    heartbeat_s: float
    action: str
    cursor: int = 0

    def start_at(self, since: str | None) -> None:
        if since is None:
            self.cursor = self.feed.last_seq
        elif since == "earliest":
            self.cursor = self.feed.oldest_seq - 1
        else:
            try:
                self.cursor = self.feed.parse_cursor(since)
            except CursorExpired as exc:
                raise StreamEnded("cursor_expired", str(exc)) from exc
            except InvalidFeedCursor as exc:
                raise StreamEnded("invalid_cursor", str(exc)) from exc

    async def pump(self, queue: asyncio.Queue[StreamItem]) -> None:
        """Feed -> filter -> mask -> the client's queue, until the client is too far behind."""
        while True:
            await self.waiter.wait_after(self.cursor, self.heartbeat_s)
            try:
                entries = self.feed.read_after(self.cursor, READ_BATCH)
            except CursorExpired as exc:
                raise StreamEnded("cursor_expired", str(exc)) from exc
            if not entries:
                if queue.empty():
                    queue.put_nowait(None)
                continue
            self.cursor = entries[-1].seq
            matching = [entry for entry in entries if self.filter.matches(entry.violation)]
            shown = self.access.present(self.key, [entry.violation for entry in matching], self.action)
            for entry, violation in zip(matching, shown, strict=True):
                change_id = self.feed.cursor(entry.seq)
                await self._put(queue, (change_id, entry.message(change_id, violation)), entry.seq)

    async def _put(self, queue: asyncio.Queue[StreamItem], item: StreamItem, seq: int) -> None:
        """Wait for room in the client's queue, but not once the client is too far behind."""
        while True:
            try:
                await asyncio.wait_for(queue.put(item), self.heartbeat_s if queue.full() else None)
                return
            except TimeoutError:
                pass
            lag = self.feed.last_seq - seq
            if lag > self.max_lag:
                log.info("stream client too slow: %d behind", lag)
                raise StreamEnded("too_slow", f"the client is {lag} changes behind (the limit is "
                                              f"{self.max_lag}); reconnect with the last id to resume")

    async def run(self, send: Callable[[StreamItem], Awaitable[None]],
                  client_gone: Awaitable[None]) -> StreamEnded | None:
        """Stream until the client leaves (None) or the stream must end (the reason)."""
        queue: asyncio.Queue[StreamItem] = asyncio.Queue(CLIENT_QUEUE)

        async def drain() -> None:
            while True:
                await send(await queue.get())

        pump = asyncio.create_task(self.pump(queue))
        sender = asyncio.create_task(drain())
        gone = asyncio.ensure_future(client_gone)
        try:
            await asyncio.wait({pump, sender, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, sender, gone):
                task.cancel()
            await asyncio.gather(pump, sender, gone, return_exceptions=True)
        if pump.done() and not pump.cancelled() and isinstance(pump.exception(), StreamEnded):
            ended = pump.exception()
            assert isinstance(ended, StreamEnded)
            return ended
        return None


def get_stream_parts(request: Request) -> tuple[ApiServices, FeedWaiter]:
    return _stream_parts(request.state.services)


def _stream_parts(services: ApiServices) -> tuple[ApiServices, FeedWaiter]:
    if services.feed is None or services.feed_waiter is None:
        raise HTTPException(503, "live streams are not available in this instance")
    return services, services.feed_waiter


def _session(services: ApiServices, waiter: FeedWaiter, key: ApiKey, filter: ViolationFilter,
             action: str) -> StreamSession:
    assert services.feed is not None
    alerts = services.alerts
    return StreamSession(feed=services.feed, waiter=waiter, access=services.access, key=key,
                         filter=filter, max_lag=alerts.stream_max_lag, heartbeat_s=alerts.stream_heartbeat_s,
                         action=action)


def _sse(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class EventStreamResponse(Response):
    """text/event-stream driven by a StreamSession; ends with an `error` event when the stream must end."""

    media_type = "text/event-stream"

    def __init__(self, session: StreamSession, resume_from: str | None) -> None:
        # Like StreamingResponse: no body attribute, so no Content-Length header (the stream is chunked).
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.session = session
        self.resume_from = resume_from

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        async def body(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async def send_item(item: StreamItem) -> None:
            await body(b": keep-alive\n\n" if item is None else _sse("violation", item[1], item[0]))

        async def client_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        # Tell EventSource clients how soon to reconnect; they resend Last-Event-ID on their own.
        await body(b"retry: 1000\n\n")
        try:
            self.session.start_at(self.resume_from)
            ended = await self.session.run(send_item, client_gone())
        except StreamEnded as exc:
            ended = exc
        if ended is None:
            return
        # The socket may be blocked by a client that stopped reading: give up after a moment.
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(body(_sse("error", {"error": ended.code, "detail": ended.detail})),
                                   _END_TIMEOUT_S)
            await asyncio.wait_for(send({"type": "http.response.body", "body": b"", "more_body": False}),
                                   _END_TIMEOUT_S)


@router.get("/v1/stream/violations", summary="Live violation changes as Server-Sent Events",
            response_class=EventStreamResponse, status_code=200,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`violation` events; `error` then close on cursor_expired, "
                                            "invalid_cursor or too_slow"}})
async def stream_violations(
    request: Request,
    key: ViolationReader,
    parts: Annotated[tuple[ApiServices, FeedWaiter], Depends(get_stream_parts)],
    filter: Annotated[ViolationFilter, Depends(filter_from_query)],
    since: SinceParam = None,
) -> EventStreamResponse:
    services, waiter = parts
    session = _session(services, waiter, key, filter, "GET /v1/stream/violations")
    return EventStreamResponse(session, request.headers.get("last-event-id") or since)


# WebSocket close codes in the application range (4000-4999), mirroring the HTTP status.
_CLOSE_CODES = {401: 4401, 403: 4403, 429: 4429}


@router.websocket("/v1/ws/violations")
async def websocket_violations(
    websocket: WebSocket,
    filter: Annotated[ViolationFilter, Depends(filter_from_query)],
    since: SinceParam = None,
) -> None:
    """Messages are JSON: `{"type": "violation", "id": ..., "change": ..., "violation": {...}}`, or
    `{"type": "error", "error": ..., "detail": ...}` followed by a close."""
    await websocket.accept()
    services: ApiServices = websocket.state.services
    access = get_access(websocket)
    try:
        key = access.authorize(token_of(websocket), [Scope.VIOLATIONS_READ])
        _, waiter = _stream_parts(services)
    except AuthError as exc:
        code = _CLOSE_CODES.get(exc.status_code, 4400)
        await _close_with_error(websocket, code, "unauthorized", exc.detail)
        return
    except HTTPException as exc:
        await _close_with_error(websocket, 1011, "unavailable", str(exc.detail))
        return
    session = _session(services, waiter, key, filter, "WS /v1/ws/violations")

    async def send_item(item: StreamItem) -> None:
        if item is not None:  # uvicorn's WebSocket pings keep idle connections alive
            await websocket.send_text(json.dumps({"type": "violation", **item[1]}, ensure_ascii=False))

    try:
        session.start_at(since)
        ended = await session.run(send_item, _until_closed(websocket))
    except StreamEnded as exc:
        ended = exc
    if ended is not None:
        code = 4408 if ended.code == "too_slow" else 4410
        await _close_with_error(websocket, code, ended.code, ended.detail)


async def _until_closed(websocket: WebSocket) -> None:
    try:
        while True:
            await websocket.receive_text()
    except (WebSocketDisconnect, RuntimeError):
        return


async def _close_with_error(websocket: WebSocket, code: int, error: str, detail: str) -> None:
    try:
        # The socket may be blocked by a client that stopped reading: give up after a moment.
        await asyncio.wait_for(websocket.send_text(json.dumps({"type": "error", "error": error,
                                                               "detail": detail})), _END_TIMEOUT_S)
        await asyncio.wait_for(websocket.close(code=code, reason=error), _END_TIMEOUT_S)
    except (WebSocketDisconnect, RuntimeError, TimeoutError, OSError):
        log.debug("websocket closed before the error could be sent")
