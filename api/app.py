"""The app factory. The lifespan owns the pipeline when the API runs embedded with it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool
from starlette.middleware.gzip import GZipMiddleware

import core
from api.access import routes as access_routes
from api.access.deps import require
from api.access.keys import Scope
from api.alerts import streams
from api.alerts.openapi import register_openapi_webhooks
from api.alerts.webhooks import routes as webhook_routes
from api.console.serve import serve_console
from api.error_handlers import install_problem_handlers
from api.observability import REQUEST_ID_HEADER, install_observability
from api.openapi import install_problem_docs, serve_offline_docs
from api.problems import problem_response_doc
from api.routes import (
    aggregates,
    bin_predictions,
    cases,
    console,
    dead_letters,
    devices,
    dispatch,
    events,
    exports,
    health,
    indices,
    open311,
    readings,
    status,
    version,
    violation_history,
    violations,
)
from api.services import ApiServices
from api.strict_input import reject_unknown_query_parameters
from processors.dispatch.watch import CrossingWatch


def create_app(services: ApiServices) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        for start in services.on_startup:
            await run_in_threadpool(start)
        # Running dispatch plans are re-planned when a bin of their depot crosses a threshold.
        crossings = None
        if services.feed is not None and services.dispatch.settings.depots:
            crossings = CrossingWatch(services.dispatch,
                                      lambda plan_id: dispatch.replan_now(services, plan_id))
            services.feed.add_listener(crossings.on_violations)
            crossings.start()
        try:
            yield {"services": services}
        finally:
            if crossings is not None:
                crossings.stop()
            # Stop in reverse order: ingest first, then processors drain, then the store closes.
            for stop in reversed(services.on_shutdown):
                await run_in_threadpool(stop)

    app = FastAPI(
        title="citywatch",
        version=core.__version__,
        summary="Urban sensor events, rule violations and dead letters.",
        lifespan=lifespan,
        # Served from the package by serve_offline_docs; ReDoc would need a CDN, and /docs is enough.
        docs_url=None,
        redoc_url=None,
        # Every /v1 route refuses query parameters it does not declare (a typo must not widen a query).
        dependencies=[Depends(reject_unknown_query_parameters)],
    )
    install_problem_handlers(app)
    open311.install_error_handler(app)
    install_observability(app, services.metrics)
    # Answers of 1 KB or more are gzip-compressed for clients that accept it: JSON shrinks about tenfold
    # (the console's map of 10,000 devices reads 7 MB of it). Event streams are never compressed.
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    install_problem_docs(app)
    serve_offline_docs(app)

    # Scopes per router (docs/alerts.md); violations and streams check theirs per route, to mask plates.
    app.include_router(violations.router)
    # Reading the history needs violations:read, taking an action violations:write (per route).
    app.include_router(violation_history.router)
    app.include_router(aggregates.router, dependencies=[Depends(require(Scope.VIOLATIONS_READ))])
    app.include_router(readings.router, dependencies=[Depends(require(Scope.READINGS_READ))])
    app.include_router(exports.router)
    app.include_router(events.router, dependencies=[Depends(require(Scope.READINGS_READ))])
    app.include_router(dead_letters.router, dependencies=[Depends(require(Scope.ADMIN))])
    app.include_router(health.router)
    app.include_router(version.router)
    app.include_router(devices.router, dependencies=[Depends(require(Scope.DEVICES_MANAGE))])
    app.include_router(bin_predictions.router, dependencies=[Depends(require(Scope.READINGS_READ))])
    # cases:read or cases:write per route (docs/cases.md), to mask photo links and plates.
    app.include_router(cases.router)
    # Reading plans needs readings:read, planning and reporting stops dispatch:write (per route).
    app.include_router(dispatch.router)
    # indices:read to read indices, rankings and reports; reports:write to publish one (docs/indices.md).
    app.include_router(indices.indices_router)
    app.include_router(indices.rankings_router)
    app.include_router(indices.reports_router)
    # GeoReport v2: its own key handling (api_key in the form) and error format (docs/cases.md).
    app.include_router(open311.router)
    # Without a violation feed or a webhook dispatcher (an instance that runs neither), these answer 503.
    not_running: dict[int | str, dict[str, Any]] = {
        503: problem_response_doc("Not available in this instance")}
    app.include_router(streams.router, responses=not_running)
    app.include_router(webhook_routes.router, responses=not_running)
    app.include_router(access_routes.router)
    app.include_router(status.router, dependencies=[Depends(require(Scope.METRICS_READ))])
    # What the browser console needs beyond the other routes: scopes per route (docs/console.md).
    app.include_router(console.router)
    if services.console.enabled:
        serve_console(app)
    # The webhook delivery and the WebSocket frames, as schemas in the same OpenAPI document.
    register_openapi_webhooks(app)
    install_cors(app, services.settings.cors_origins)
    return app


# What a page on an allowed origin may send and read. Keys travel in a header (never a cookie), so no
# credentials mode is needed; Last-Event-ID lets an SSE client built on fetch resume the stream (the
# browser's EventSource cannot set headers and resumes with `since` or its own reconnect). The API pages
# in the body (`next_cursor`), so no paging header needs exposing; what a page may want to read is the
# request id to quote in a report, how long to wait after a 429 or 503, and an export's file name.
CORS_ALLOWED_HEADERS = ["Authorization", "X-API-Key", "Content-Type", "Last-Event-ID", REQUEST_ID_HEADER]
CORS_EXPOSED_HEADERS = [REQUEST_ID_HEADER, "Retry-After", "Content-Disposition"]
CORS_MAX_AGE_S = 600


def install_cors(app: FastAPI, origins: list[str]) -> None:
    """CORS for `api.cors_origins` (none: no CORS headers at all). Added last, so it is the outermost
    middleware: a preflight is answered before any key is asked for, and refusals (401, 403, 429) carry
    the headers too, so the page can read why it was refused."""
    if not origins:
        return
    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials=False,
                       allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                       allow_headers=CORS_ALLOWED_HEADERS, expose_headers=CORS_EXPOSED_HEADERS,
                       max_age=CORS_MAX_AGE_S)
