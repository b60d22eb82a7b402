"""Request ids and HTTP metrics for the API and the roles' status endpoints, as two pure ASGI layers.

Both wrap the whole application, outside Starlette's error middleware: a 500 it answers still carries
the `X-Request-ID` header and is counted.

Request id: an incoming `X-Request-ID` of 1 to 128 characters from [A-Za-z0-9._:-] is kept (so a proxy's
or a client's id follows the request through), anything else is replaced by a new one (uuid4, hex). The id
is bound for the logs (core/log_format.py) while the request is handled and echoed on every answer,
errors, 404s and WebSocket refusals and handshakes included.

Metrics (core/metrics.py): requests by method, route template and status; a latency histogram per
method and route template; requests in flight. The route label is the template the request matched
(`/v1/violations/{violation_id}`), or "unmatched", never the raw path: its values stay bounded. Live
streams (Server-Sent Events, WebSocket) are counted when they start and tracked in
`citywatch_http_streams_open`, but kept out of the latency histogram and of the requests in flight: they
last as long as the client stays connected, and would drown the latency of every other answer.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from fastapi import FastAPI
from fastapi.routing import APIWebSocketRoute, iter_route_contexts
from starlette.routing import Mount, WebSocketRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.log_format import bind_request_id, unbind_request_id
from core.metrics import Metrics

REQUEST_ID_HEADER: Final = "X-Request-ID"
_HEADER_KEY: Final = REQUEST_ID_HEADER.lower().encode()
_SANE_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# The messages that open an answer (an HTTP one, a WebSocket refusal or handshake): they get the header.
_ANSWER_STARTS: Final = frozenset(
    {"http.response.start", "websocket.http.response.start", "websocket.accept"})

UNMATCHED_ROUTE: Final = "unmatched"
# Any other method (clients may send anything) is counted as OTHER, to keep the label bounded.
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
WEBSOCKET_METHOD: Final = "WEBSOCKET"


def install_observability(app: FastAPI, metrics: Metrics) -> None:
    """Wrap `app`'s whole middleware stack in the request-id and metrics layers."""
    build = app.build_middleware_stack
    templates = RouteTemplates(app)

    def build_observed() -> ASGIApp:
        return RequestIdMiddleware(HttpMetricsMiddleware(build(), metrics, templates))

    app.build_middleware_stack = build_observed  # type: ignore[method-assign]


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's id when it is sane, else a new one."""
    for name, value in headers:
        if name == _HEADER_KEY:
            candidate = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        header = (_HEADER_KEY, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] in _ANSWER_STARTS:
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _HEADER_KEY]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        token = bind_request_id(request_id)
        await self.app(scope, receive, send_with_id)
        # Not in a `finally`: when the app raises, the server logs the traceback after this returns, and
        # that line should carry the id too (each request runs in its own task, whose context ends with it).
        unbind_request_id(token)


@dataclass(frozen=True)
class _Template:
    regex: re.Pattern[str]
    template: str
    methods: frozenset[str] | None  # None: any method (mounts)
    websocket: bool | None  # None: both kinds (mounts)


class RouteTemplates:
    """Which route template a request's path matches, read from the app's routes on first use (once
    every router is included)."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._templates: list[_Template] | None = None

    def of(self, scope: Scope) -> str:
        if self._templates is None:
            self._templates = list(_templates(self._app))
        path = scope["path"]
        websocket = scope["type"] == "websocket"
        method = scope.get("method", "GET")
        candidates = [t for t in self._templates
                      if (t.websocket is None or t.websocket == websocket) and t.regex.fullmatch(path)]
        # As the router: the first route with the path and the method; else the path's (a 405).
        for candidate in candidates:
            if candidate.methods is None or method in candidate.methods:
                return candidate.template
        return candidates[0].template if candidates else UNMATCHED_ROUTE


def _templates(app: FastAPI) -> Iterator[_Template]:
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        path = context.path
        if path is None:
            continue
        if isinstance(route, Mount):
            mount = path.rstrip("/")
            regex, _, _ = compile_path(mount + "/{path:path}")
            yield _Template(regex, mount + "/{path}", None, None)
            continue
        regex, template, _ = compile_path(path)
        methods = context.methods
        yield _Template(regex, template, frozenset(methods) if methods else None,
                        isinstance(route, WebSocketRoute | APIWebSocketRoute))


def _is_event_stream(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers)


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, templates: RouteTemplates) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.metrics
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        started = time.perf_counter()
        answered = False
        stream = False
        route: str | None = None
        metrics.http_in_flight.inc()

        def route_of() -> str:  # matched once per request, when first needed
            nonlocal route
            if route is None:
                route = self.templates.of(scope)
            return route

        async def send_observed(message: Message) -> None:
            nonlocal answered, stream
            if message["type"] == "http.response.start" and not answered:
                answered = True
                metrics.http_requests.labels(method, route_of(), str(message["status"])).inc()
                if _is_event_stream(message.get("headers", ())):
                    stream = True
                    metrics.http_in_flight.dec()
                    metrics.http_streams_open.labels("sse").inc()
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            if not answered:
                # The app ended without an answer (the client left, or a bug): the server answers 500.
                metrics.http_requests.labels(method, route_of(), "500").inc()
            if stream:
                metrics.http_streams_open.labels("sse").dec()
            else:
                metrics.http_in_flight.dec()
                metrics.http_request_seconds.labels(method, route_of()).observe(time.perf_counter() - started)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.metrics
        counted = False
        accepted = False

        def count(status: int) -> None:
            nonlocal counted
            if not counted:
                counted = True
                metrics.http_requests.labels(WEBSOCKET_METHOD, self.templates.of(scope), str(status)).inc()

        async def send_observed(message: Message) -> None:
            nonlocal accepted
            kind = message["type"]
            if kind == "websocket.accept" and not accepted:
                accepted = True
                count(101)
                metrics.http_streams_open.labels("websocket").inc()
            elif kind == "websocket.http.response.start":
                count(message["status"])
            elif kind == "websocket.close" and not accepted:
                count(403)  # a close before the handshake: the server refuses it with 403
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            count(500)  # only if nothing was sent: the server answers the handshake with 500
            if accepted:
                metrics.http_streams_open.labels("websocket").dec()
