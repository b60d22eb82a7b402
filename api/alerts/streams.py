"""Live streams of violation state changes: Server-Sent Events and WebSocket, with filters and resume.

Each client has a pump task that reads the shared feed from the client's cursor, filters, and puts the
matching changes into the client's own small bounded queue (CLIENT_QUEUE messages); a sender task
checks the client's key, masks and writes the queue to the socket (so a revoked key ends the stream,
and a key that lost `plates` is masked, at the next message). The pipeline never waits for either:
the feed is only read. When a client reads slower than its changes arrive, its queue fills and its
pump waits; once the pump is more than `stream_max_lag` changes behind the newest, the client is sent
an error `too_slow` and disconnected (even while its socket is blocked, because the pump runs apart
from the sender). It can reconnect with its last id and resume while that id is still in the window.
Memory per client is bounded by the queue, whatever the number of clients.

Every message carries `id` = `<feed epoch>-<sequence>`. Reconnect with `Last-Event-ID: <id>` (SSE
clients do this on their own) or `?since=<id>`; `since=earliest` starts from the oldest change held.
Without either the stream starts with the next change. An id older than the window, or from before a
restart, is refused before the stream starts (HTTP 410 `cursor_expired`), as are a bad filter (422) or
key (401, 403, 429), on the WebSocket too (an HTTP answer to the handshake), never a silent gap.
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

from api.access.control import AccessControl
from api.access.deps import ViolationReader, authorize_connection, get_access, token_of
from api.access.keys import ApiKey, Scope
from api.alerts.filters import ViolationFilter, filter_from_query
from api.alerts.key_state import KeyState, stream_refusal
from api.alerts.stream_hub import Outgoing, Route, wait_detached
from api.alerts.waiter import FeedWaiter
from api.services import ApiServices
from processors.outputs.feed import CursorExpired, FeedEntry, InvalidFeedCursor, ViolationFeed, violations_of

log = logging.getLogger(__name__)

router = APIRouter(tags=["streams"])

READ_BATCH = 500
CLIENT_QUEUE = 256
SinceParam = Annotated[str | None, Query(
    description="Resume after this id (the `id` of the last message received), or `earliest`.")]
CATCH_UP = ("catch up through GET /v1/violations?from=<the time of the last change received> and reconnect "
            "without a cursor")


class StreamEnded(Exception):
    """The stream cannot go on; `code` and `detail` say why (sent to the client before closing)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# What a session hands to the socket: (id, message, message as JSON), or None for "idle for a heartbeat
# interval".
StreamItem = Outgoing | None
# What waits in a client's queue: a matching feed entry, presented (masked or not) only when it goes out.
_Queued = FeedEntry | None
_END_TIMEOUT_S = 1.0
# Messages taken from the client's queue at once: presented together (one audit record), sent one by one.
SEND_BATCH = 100


@dataclass
class StreamSession:
    """One client's position in the feed and what it wants to see.

    `current_key` returns the key as it is now (None once revoked); it is asked before every message
    that goes out, so a revoked key ends the stream at the next message and a key that lost `plates`
    gets masked plates from the next message on. None: the key never changes (tests, auth disabled)."""

    feed: ViolationFeed
    waiter: FeedWaiter
    access: AccessControl
    key: ApiKey
    filter: ViolationFilter
    max_lag: int
    heartbeat_s: float
    action: str
    cursor: int = 0
    current_key: Callable[[], ApiKey | None] | None = None

    def start_at(self, since: str | None) -> None:
        """Position the session; raises StreamEnded (cursor_expired, invalid_cursor) for a bad cursor."""
        if since is None:
            self.cursor = self.feed.last_seq
        elif since == "earliest":
            self.cursor = self.feed.oldest_seq - 1
        else:
            try:
                self.cursor = self.feed.parse_cursor(since)
                self.feed.read_after(self.cursor, 0)  # raises when the changes after it were dropped
            except CursorExpired as exc:
                raise StreamEnded("cursor_expired", f"{exc}; {CATCH_UP}") from exc
            except InvalidFeedCursor as exc:
                raise StreamEnded("invalid_cursor", str(exc)) from exc

    async def pump(self, queue: asyncio.Queue[_Queued]) -> None:
        """Feed -> filter -> the client's queue, until the client is too far behind. Once caught up, the
        feed's hub routes the changes into the queue instead (api/alerts/stream_hub.py), until the queue
        is full."""
        hub = self.waiter.hub
        while True:
            route = hub.attach(self.cursor, self.filter, queue)
            if route is not None:
                try:
                    await self._while_routed(route, queue)
                finally:
                    hub.detach(route)
                self.cursor = route.cursor
                continue
            await self.waiter.wait_after(self.cursor, self.heartbeat_s)
            try:
                entries = self.feed.read_after(self.cursor, READ_BATCH)
            except CursorExpired as exc:
                raise StreamEnded("cursor_expired", f"{exc}; {CATCH_UP}") from exc
            if not entries:
                if queue.empty():
                    queue.put_nowait(None)
                continue
            self.cursor = entries[-1].seq
            for entry in entries:
                if self.filter.matches_entry(entry):
                    await self._put(queue, entry)

    async def _while_routed(self, route: Route, queue: asyncio.Queue[_Queued]) -> None:
        """Until the hub detaches the client: a heartbeat when nothing came for `heartbeat_s`."""
        routed = route.routed
        while not await wait_detached(route, self.heartbeat_s):
            if route.routed == routed and queue.empty():
                queue.put_nowait(None)
            routed = route.routed

    async def _put(self, queue: asyncio.Queue[_Queued], entry: FeedEntry) -> None:
        """Wait for room in the client's queue, but not once the client is too far behind."""
        while True:
            try:
                await asyncio.wait_for(queue.put(entry), self.heartbeat_s if queue.full() else None)
                return
            except TimeoutError:
                pass
            lag = self.feed.last_seq - entry.seq
            if lag > self.max_lag:
                log.info("stream client too slow: %d behind", lag)
                raise StreamEnded("too_slow", f"the client is {lag} changes behind (the limit is "
                                              f"{self.max_lag}); reconnect with the last id to resume")

    def key_now(self) -> ApiKey:
        """The key as it is now; raises StreamEnded once it was revoked or lost violations:read."""
        if self.current_key is None:
            return self.key
        key = self.current_key()
        refusal = stream_refusal(key)
        if refusal is not None:
            raise StreamEnded(*refusal)
        assert key is not None
        return key

    async def send_batch(self, items: list[_Queued], send: Callable[[StreamItem], Awaitable[None]]) -> None:
        """Send queued entries, checking the key before each one goes out (and before a heartbeat, so an
        idle stream of a revoked key ends too). The messages are presented and encoded once for all clients
        (stream_hub.SharedMessages); a disclosure of plates or evidence links is audited under the key, for
        the rest of the batch, before the first of them goes out (AccessControl.audit_disclosures)."""
        entries = [item for item in items if item is not None]
        if not entries:
            self.key_now()
            await send(None)
            return
        messages = self.waiter.hub.messages
        shown_plates: bool | None = None
        for index, entry in enumerate(entries):
            key = self.key_now()
            plates = key.allows(Scope.PLATES)
            if plates != shown_plates:  # first message, or the key's plates scope changed since
                if plates:
                    self.access.audit_disclosures(key, violations_of(entries[index:]), self.action)
                shown_plates = plates
            await send(messages.get(entry, plates))

    async def run(self, send: Callable[[StreamItem], Awaitable[None]],
                  client_gone: Awaitable[None]) -> StreamEnded | None:
        """Stream until the client leaves (None) or the stream must end (the reason)."""
        queue: asyncio.Queue[_Queued] = asyncio.Queue(CLIENT_QUEUE)

        async def drain() -> None:
            while True:
                items = [await queue.get()]
                while len(items) < SEND_BATCH and not queue.empty():
                    items.append(queue.get_nowait())
                await self.send_batch(items, send)

        pump = asyncio.create_task(self.pump(queue))
        sender = asyncio.create_task(drain())
        gone = asyncio.ensure_future(client_gone)
        try:
            await asyncio.wait({pump, sender, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, sender, gone):
                task.cancel()
            await asyncio.gather(pump, sender, gone, return_exceptions=True)
        for task in (pump, sender):
            if task.done() and not task.cancelled() and isinstance(task.exception(), StreamEnded):
                ended = task.exception()
                assert isinstance(ended, StreamEnded)
                return ended
        return None


def get_stream_parts(request: Request) -> tuple[ApiServices, FeedWaiter]:
    return _stream_parts(request.state.services)


def _stream_parts(services: ApiServices) -> tuple[ApiServices, FeedWaiter]:
    if services.feed is None or services.feed_waiter is None:
        raise HTTPException(503, "live streams are not available in this instance")
    return services, services.feed_waiter


# HTTP status of a cursor refused before the stream starts: a client stops on it instead of reconnecting.
_CURSOR_STATUS = {"cursor_expired": 410, "invalid_cursor": 400}


def _started_session(services: ApiServices, waiter: FeedWaiter, key: ApiKey, token: str | None,
                     filter: ViolationFilter, action: str, since: str | None) -> StreamSession:
    """A session positioned at its cursor; a bad cursor is an HTTP error (410, 400) before any byte of
    the stream, never an event inside a 200 that EventSource would reconnect to forever."""
    assert services.feed is not None
    alerts = services.alerts
    keys = KeyState(services.access)
    session = StreamSession(feed=services.feed, waiter=waiter, access=services.access, key=key,
                            filter=filter, max_lag=alerts.stream_max_lag,
                            heartbeat_s=alerts.stream_heartbeat_s, action=action,
                            current_key=lambda: keys.by_token(token))
    try:
        session.start_at(since)
    except StreamEnded as exc:
        raise HTTPException(_CURSOR_STATUS[exc.code], f"{exc.code}: {exc.detail}") from exc
    return session


def _sse_frame(item: Outgoing) -> bytes:
    return f"id: {item.id}\nevent: {_event_of(item.message)}\ndata: {item.text}\n\n".encode()


def _sse(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class EventStreamResponse(Response):
    """text/event-stream driven by a started StreamSession; ends with an `error` event when the stream
    must end after it started (too_slow, cursor_expired while reading, key_revoked, key_lacks_scope)."""

    media_type = "text/event-stream"

    def __init__(self, session: StreamSession) -> None:
        # Like StreamingResponse: no body attribute, so no Content-Length header (the stream is chunked).
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.session = session

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        async def body(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async def send_item(item: StreamItem) -> None:
            await body(b": keep-alive\n\n" if item is None else _sse_frame(item))

        async def client_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        # Tell EventSource clients how soon to reconnect; they resend Last-Event-ID on their own.
        await body(b"retry: 1000\n\n")
        ended = await self.session.run(send_item, client_gone())
        if ended is None:
            return
        # The socket may be blocked by a client that stopped reading: give up after a moment.
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(body(_sse("error", {"error": ended.code, "detail": ended.detail})),
                                   _END_TIMEOUT_S)
            await asyncio.wait_for(send({"type": "http.response.body", "body": b"", "more_body": False}),
                                   _END_TIMEOUT_S)


_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"description": "`invalid_cursor`: the cursor is not an id this feed handed out."},
    410: {"description": "`cursor_expired`: the changes after the cursor are no longer held (or were held "
                         "by another replica or an earlier run); catch up through `GET /v1/violations` and "
                         "reconnect without a cursor."},
    422: {"description": "An unknown query parameter, violation type, severity or status (the detail "
                         "names the closest valid one), or a bad bounding box."},
}


@router.get("/v1/stream/violations", summary="Live violation changes as Server-Sent Events",
            response_class=EventStreamResponse, status_code=200,
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "`violation` events, each `data` a ViolationChange (see the "
                                            "`violation-change` webhook for its schema); an `error` "
                                            "event then the end of the stream on too_slow, cursor_expired "
                                            "(a client fell out of the window while reading), key_revoked "
                                            "or key_lacks_scope"},
                       **_REFUSALS})
async def stream_violations(
    request: Request,
    key: ViolationReader,
    parts: Annotated[tuple[ApiServices, FeedWaiter], Depends(get_stream_parts)],
    filter: Annotated[ViolationFilter, Depends(filter_from_query)],
    since: SinceParam = None,
) -> EventStreamResponse:
    services, waiter = parts
    session = _started_session(services, waiter, key, token_of(request), filter, "GET /v1/stream/violations",
                               request.headers.get("last-event-id") or since)
    return EventStreamResponse(session)


# WebSocket close codes in the application range (4000-4999) for a stream that ends after it started,
# mirroring the HTTP status. Before the handshake is accepted, refusals are HTTP answers instead.
CLOSE_CODES = {"too_slow": 4408, "cursor_expired": 4410, "key_revoked": 4401, "key_lacks_scope": 4403}


@router.websocket("/v1/ws/violations")
async def websocket_violations(
    websocket: WebSocket,
    filter: Annotated[ViolationFilter, Depends(filter_from_query)],
    since: SinceParam = None,
) -> None:
    """Messages are JSON: `{"type": "violation", "id": ..., "change": ..., "violation": {...}}`, or
    `{"type": "error", "error": ..., "detail": ...}` followed by a close (CLOSE_CODES).

    Everything that can be refused is checked before the handshake is accepted, and refused with an
    HTTP status and a JSON body (401, 403, 429, 422, 410, 400, 503), as the SSE endpoint answers."""
    services: ApiServices = websocket.state.services
    access = get_access(websocket)
    token = token_of(websocket)
    # Refused as on the HTTP routes: the same problem, throttle and metric, before the handshake.
    key = authorize_connection(websocket, access, [Scope.VIOLATIONS_READ])
    _, waiter = _stream_parts(services)
    session = _started_session(services, waiter, key, token, filter, "WS /v1/ws/violations", since)
    await websocket.accept()

    async def send_item(item: StreamItem) -> None:
        if item is not None:  # uvicorn's WebSocket pings keep idle connections alive
            # {"type": ..., then the message's own fields}: the shared JSON text, not encoded again.
            await websocket.send_text(f'{{"type": "{_event_of(item.message)}", {item.text[1:]}')

    ended = await session.run(send_item, _until_closed(websocket))
    if ended is not None:
        await _close_with_error(websocket, CLOSE_CODES.get(ended.code, 4400), ended.code, ended.detail)


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


def _event_of(message: dict[str, Any]) -> str:
    """The SSE event (WebSocket `type`): `violation`, or `case` for a case SLA event."""
    return "case" if "case" in message else "violation"
