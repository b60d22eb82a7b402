"""The push channels in the OpenAPI document: the change message, the webhook delivery and the WebSocket
frames, as OpenAPI `webhooks` (what citywatch sends, as opposed to the paths it answers).

OpenAPI has no notion of a WebSocket, so the frames of `GET /v1/ws/violations` are described as a
pseudo-webhook named `websocket-violations-frame`; its description says so. Call
`register_openapi_webhooks(app)` from the app factory.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import FastAPI, Header
from pydantic import BaseModel, Field

from api.schemas import ViolationOut


class ViolationChange(BaseModel):
    """One violation state change: the body of a webhook delivery, the `data` of an SSE `violation`
    event, a WebSocket `violation` frame (with `"type": "violation"`), and the MQTT and Kafka payload."""

    id: str = Field(description="The feed position `<feed epoch>-<sequence>`: what a stream resumes from "
                                "(`Last-Event-ID` or `since`).", examples=["1795671600000-42"])
    change: Literal["opened", "cleared"] = Field(description="A violation opened, or cleared.")
    idempotency_key: str = Field(description="`<violation id>:<status>:<updated_time_ms>`: the same on every "
                                             "retry and every channel; drop a key already processed.")
    published_time_ms: int = Field(description="When the change was published (Unix ms).")
    violation: ViolationOut = Field(description="As in `GET /v1/violations/{id}` (with `detected_time_ms`, "
                                                "without people's `handling`); plates masked unless the "
                                                "key may see them.")


class ViolationFrame(ViolationChange):
    type: Literal["violation"]


class SlaCase(BaseModel):
    case_id: str
    type: str
    state: str
    priority: str
    department: str | None
    assignee: str | None
    category: str | None
    grid: str | None
    district: str | None
    location: dict[str, float] | None = Field(description="`lat` and `lon`, or null.")
    created_time_ms: int
    warning_ms: int | None
    deadline_ms: int | None
    due_ms: int = Field(description="The warning time or the deadline reached (Unix ms).")
    signalled_ms: int = Field(description="When it was claimed (Unix ms).")
    escalated_to: str | None = Field(description="The supervisor department a breach escalated it to.")


class CaseSlaChange(BaseModel):
    """A case reached its SLA warning time or passed its deadline (docs/alerts.md, "Case SLA events"): sent
    only to filters whose `events` ask for it; SSE event `case`, WebSocket frame type `case`."""

    id: str = Field(description="The feed position, as for violation changes.")
    change: Literal["case_sla_warning", "case_sla_breach"]
    idempotency_key: str = Field(description="`<case id>:<change>:<due_ms>`: delivery is at least once, and "
                                 "a repeat of an event carries the same key; drop repeats by it.")
    published_time_ms: int
    case: SlaCase


class CaseFrame(CaseSlaChange):
    type: Literal["case"]


class StreamErrorFrame(BaseModel):
    """Sent once a stream that had started must end; on the WebSocket followed by a close with the code
    in brackets: too_slow (4408), cursor_expired (4410), key_revoked (4401), key_lacks_scope (4403)."""

    type: Literal["error"]
    error: Literal["too_slow", "cursor_expired", "key_revoked", "key_lacks_scope"]
    detail: str


WebSocketFrame = Annotated[ViolationFrame | CaseFrame | StreamErrorFrame, Field(discriminator="type")]

_DELIVERY = """A POST to the subscription's URL for every matching change, at least once.

Verify `X-Citywatch-Signature` (`t=<unix s>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`; after a secret
rotation, one `v1` per secret still valid: accept when any matches) and reject old timestamps; drop an
`Idempotency-Key` already processed. Any 2xx within `alerts.webhooks.timeout_s` is success; anything
else, a redirect included (redirects are not followed), is retried with backoff. See docs/alerts.md."""

_FRAMES = """Not an HTTP callback: the frames of the WebSocket `GET /v1/ws/violations` (the same filters
and `since` as `GET /v1/stream/violations`), described here because OpenAPI has no WebSocket operations.

Each text frame is one JSON object, `violation`, `case` (a case SLA event, for filters that ask for it)
or `error`. A handshake that cannot be served is refused
before it is accepted with an HTTP status and a JSON body, as the SSE endpoint answers: 401, 403 and 429
(key), 422 (filter), 410 (`cursor_expired`), 400 (`invalid_cursor`), 503 (no live streams)."""


def register_openapi_webhooks(app: FastAPI) -> None:
    """Add the webhook delivery and the WebSocket frames to `app`'s OpenAPI document."""

    @app.webhooks.post("violation-change", summary="A violation change delivered to a webhook subscription",
                       description=_DELIVERY, status_code=204,
                       responses={204: {"description": "Any 2xx: delivered."}})
    def violation_change(
        body: ViolationChange,
        x_citywatch_signature: Annotated[str, Header(description="t=<unix s>,v1=<hex>[,v1=<hex>]")],
        idempotency_key: Annotated[str, Header(description="The message's idempotency_key.")],
        x_citywatch_event: Annotated[Literal["violation.opened", "violation.cleared"], Header()],
        x_citywatch_delivery: Annotated[str, Header(description="The delivery id, as in the delivery log.")],
    ) -> None:
        """Documentation only: citywatch sends this request, it does not answer it."""

    @app.webhooks.post("case-sla-event", summary="A case SLA warning or breach delivered to a webhook "
                       "subscription whose filter lists it in `events`", description=_DELIVERY,
                       status_code=204, responses={204: {"description": "Any 2xx: delivered."}})
    def case_sla_event(
        body: CaseSlaChange,
        x_citywatch_signature: Annotated[str, Header(description="t=<unix s>,v1=<hex>[,v1=<hex>]")],
        idempotency_key: Annotated[str, Header(description="The message's idempotency_key.")],
        x_citywatch_event: Annotated[Literal["case.case_sla_warning", "case.case_sla_breach"], Header()],
        x_citywatch_delivery: Annotated[str, Header(description="The delivery id, as in the delivery log.")],
    ) -> None:
        """Documentation only: citywatch sends this request, it does not answer it."""

    @app.webhooks.post("websocket-violations-frame", summary="A frame of the WebSocket /v1/ws/violations",
                       description=_FRAMES, status_code=204,
                       responses={204: {"description": "Nothing is answered to a frame."}})
    def websocket_violations_frame(frame: WebSocketFrame) -> None:
        """Documentation only."""
