"""The small HTTP face of a headless role (`citywatch ingest`, `citywatch process`).

Health checks and monitoring need the same endpoints from every role: /healthz, /readyz, /metrics,
/v1/status and /version. The role's start and stop run in the lifespan, as the full API does for
`citywatch up`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Response
from starlette.concurrency import run_in_threadpool

import core
from api.observability import install_observability
from api.openapi import serve_offline_docs
from api.routes import status, version
from api.schemas import ComponentOut, ReadinessOut
from api.services import ComponentStatus
from core.metrics import Metrics


@dataclass
class RoleServices:
    metrics: Metrics
    readiness: Callable[[], list[ComponentStatus]]
    status: Callable[[], dict[str, Any]]
    on_startup: list[Callable[[], None]] = field(default_factory=list)
    on_shutdown: list[Callable[[], None]] = field(default_factory=list)


def create_status_app(services: RoleServices, title: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        for start in services.on_startup:
            await run_in_threadpool(start)
        try:
            yield {"services": services}
        finally:
            for stop in reversed(services.on_shutdown):
                await run_in_threadpool(stop)

    # The docs page from the package, as on the full API (a control network may have no internet).
    app = FastAPI(title=title, version=core.__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    install_observability(app, services.metrics)
    serve_offline_docs(app)

    @app.get("/healthz", tags=["health"], summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=ReadinessOut, summary="Every component is ready",
             responses={503: {"model": ReadinessOut, "description": "A component is not ready"}})
    def readyz(response: Response) -> ReadinessOut:
        statuses = services.readiness()
        ready = all(s.ready for s in statuses)
        if not ready:
            response.status_code = 503
        return ReadinessOut(ready=ready, components=[
            ComponentOut(name=s.name, ready=s.ready, detail=s.detail) for s in statuses])

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(services.metrics.exposition(), media_type="text/plain; version=0.0.4")

    app.include_router(status.router)
    app.include_router(version.router)
    return app
