"""Live streams of violation state changes: Server-Sent Events and WebSocket, with filters and resume.

Both read the shared feed from a per-client cursor rather than copying every change into per-client
queues: the ring is the buffer, so memory does not grow with the number of clients. What bounds a
client is its lag: a client more than `stream_max_lag` changes behind the newest (because it reads
slower than changes arrive and the socket pushes back) is sent an error naming the reason and
disconnected; it can reconnect with its last id and resume while that id is still in the window.

Every message carries `id` = `<feed epoch>-<sequence>`. Reconnect with `Last-Event-ID: <id>` (SSE
clients do this on their own) or `?since=<id>`; `since=earliest` starts from the oldest change held.
Without either the stream starts with the next change. An id older than the window, or from before a
restart, gets an error `cursor_expired` instead of a silent gap.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

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
SinceParam = Annotated[str | None, Query(
    description="Resume after this id (the `id` of the last message received), or `earliest`.")]


class StreamEnded(Exception):
    """The stream cannot go on; `code` and `detail` say why (sent to the client before closing)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


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

    async def next_batch(self) -> list[tuple[str, dict[str, Any]]]:
        """The next matching changes as (id, message); empty after a heartbeat interval with none."""
        await self.waiter.wait_after(self.cursor, self.heartbeat_s)
        lag = self.feed.last_seq - self.cursor
        if lag > self.max_lag:
            raise StreamEnded("too_slow", f"the client is {lag} changes behind (the limit is "
                                          f"{self.max_lag}); reconnect with the last id to resume")
        try:
            entries = self.feed.read_after(self.cursor, READ_BATCH)
        except CursorExpired as exc:
            raise StreamEnded("cursor_expired", str(exc)) from exc
        if not entries:
            return []
        self.cursor = entries[-1].seq
        matching = [entry for entry in entries if self.filter.matches(entry.violation)]
        shown = self.access.present(self.key, [entry.violation for entry in matching], self.action)
        ids = [self.feed.cursor(entry.seq) for entry in matching]
        return [(change_id, entry.message(change_id, violation))
                for change_id, entry, violation in zip(ids, matching, shown, strict=True)]


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


@router.get("/v1/stream/violations", summary="Live violation changes as Server-Sent Events",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`violation` events; `error` then close on cursor_expired, "
                                            "invalid_cursor or too_slow"}})
async def stream_violations(
    request: Request,
    key: ViolationReader,
    parts: Annotated[tuple[ApiServices, FeedWaiter], Depends(get_stream_parts)],
    filter: Annotated[ViolationFilter, Depends(filter_from_query)],
    since: SinceParam = None,
) -> StreamingResponse:
    services, waiter = parts
    session = _session(services, waiter, key, filter, "GET /v1/stream/violations")
    resume_from = request.headers.get("last-event-id") or since

    async def events() -> AsyncIterator[bytes]:
        # Tell EventSource clients how soon to reconnect; they resend Last-Event-ID on their own.
        yield b"retry: 1000\n\n"
        try:
            session.start_at(resume_from)
            while True:
                batch = await session.next_batch()
                if not batch:
                    yield b": keep-alive\n\n"
                for event_id, data in batch:
                    yield _sse("violation", data, event_id)
        except StreamEnded as ended:
            yield _sse("error", {"error": ended.code, "detail": ended.detail})

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


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
    # The client never needs to talk; reading still matters, to notice a close while we wait.
    closed = asyncio.create_task(_until_closed(websocket))
    try:
        session.start_at(since)
        while not closed.done():
            batch_task = asyncio.create_task(session.next_batch())
            await asyncio.wait({batch_task, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not batch_task.done():
                batch_task.cancel()
                break
            for event_id, data in batch_task.result():
                await websocket.send_text(json.dumps({"type": "violation", **data, "id": event_id},
                                                     ensure_ascii=False))
    except StreamEnded as ended:
        code = 4408 if ended.code == "too_slow" else 4410
        await _close_with_error(websocket, code, ended.code, ended.detail)
    except WebSocketDisconnect:
        pass
    finally:
        closed.cancel()


async def _until_closed(websocket: WebSocket) -> None:
    try:
        while True:
            await websocket.receive_text()
    except (WebSocketDisconnect, RuntimeError):
        return


async def _close_with_error(websocket: WebSocket, code: int, error: str, detail: str) -> None:
    try:
        await websocket.send_text(json.dumps({"type": "error", "error": error, "detail": detail}))
        await websocket.close(code=code, reason=error)
    except (WebSocketDisconnect, RuntimeError):
        log.debug("websocket closed before the error could be sent")
