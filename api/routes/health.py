"""Liveness, readiness and metrics: what an orchestrator and a monitoring system poll."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from api.access.deps import require
from api.access.keys import Scope
from api.deps import ServicesDep
from api.schemas import ComponentOut, ReadinessOut
from api.services import ComponentStatus

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadinessOut, summary="Every component is ready",
            responses={503: {"model": ReadinessOut, "description": "A component is not ready"}})
def readyz(services: ServicesDep, response: Response) -> ReadinessOut:
    statuses: list[ComponentStatus] = []
    try:
        services.store.ping()
        statuses.append(ComponentStatus("store", True))
    except Exception as exc:  # readiness reports the failure instead of raising it
        statuses.append(ComponentStatus("store", False, f"{type(exc).__name__}: {exc}"))
    statuses.extend(services.readiness())
    ready = all(status.ready for status in statuses)
    if not ready:
        response.status_code = 503
    return ReadinessOut(ready=ready, components=[
        ComponentOut(name=s.name, ready=s.ready, detail=s.detail) for s in statuses
    ])


# Metrics reveal traffic and device activity: they need a key with metrics:read (Prometheus sends it
# with `authorization: {credentials: ...}` in its scrape config).
@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            dependencies=[Depends(require(Scope.METRICS_READ))])
def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.exposition(), media_type="text/plain; version=0.0.4")
