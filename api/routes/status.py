"""GET /v1/status: what this process is doing now: its role, throughput and, on Kafka, lag per partition."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

router = APIRouter(tags=["health"])


@router.get(
    "/v1/status",
    summary="Role, events per second and consumer lag per partition",
    description="`role` is up, ingest, process or api. On Kafka, `partitions` lists each partition with its "
                "end offset, the processors' committed offset and the lag between them; `events_per_s` is "
                "measured over the last 10 s (the api role derives ingest and process rates from offsets).",
)
async def status(request: Request) -> dict[str, Any]:
    services = request.state.services
    # The status may ask Kafka (the api role): keep that off the event loop.
    result: dict[str, Any] = await run_in_threadpool(services.status)
    return result
