"""Events per second over a sliding window, and GET /v1/status on the API and on a headless role."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.services import ApiServices, ComponentStatus
from api.status_app import RoleServices, create_status_app
from core.metrics import Metrics
from core.rate import RateMeter
from store.sqlite_store import SqliteStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def call(app: FastAPI, *paths: str) -> list[httpx.Response]:
    """GET each path in order inside the app's lifespan (start, requests, stop), over ASGI."""
    async def run() -> list[httpx.Response]:
        async with app.router.lifespan_context(app) as state:
            transport = httpx.ASGITransport(app=_WithState(app, state))
            async with httpx.AsyncClient(transport=transport, base_url="http://citywatch") as client:
                return [await client.get(path) for path in paths]

    return asyncio.run(run())


class _WithState:
    """Hands the lifespan state to each request, as the ASGI server does."""

    def __init__(self, app: FastAPI, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app({**scope, "state": dict(self.state or {})}, receive, send)


def test_rate_counts_complete_seconds_of_the_window_only():
    clock = FakeClock()
    meter = RateMeter(window_s=10, clock=clock)
    meter.add(50)
    assert meter.rate() == 0  # the current second is still filling
    clock.now += 1
    assert meter.rate() == 5.0
    for _ in range(20):
        meter.add(100)
        clock.now += 1
    assert meter.rate() == 100.0
    clock.now += 30  # quiet: the window empties
    assert meter.rate() == 0
    assert meter.total == 2050


def test_the_api_serves_the_status_it_is_given(tmp_path):
    store = SqliteStore.in_directory(tmp_path)
    services = ApiServices(store=store, metrics=Metrics(),
                           status=lambda: {"role": "api", "partitions": [{"partition": 0, "lag": 3}]})
    try:
        [response] = call(create_app(services), "/v1/status")
    finally:
        store.close()
    assert response.json() == {"role": "api", "partitions": [{"partition": 0, "lag": 3}]}


@pytest.mark.parametrize("ready", [True, False])
def test_a_headless_role_serves_health_metrics_and_status(ready):
    metrics = Metrics()
    metrics.events_per_second.labels("process").set(42)
    started: list[str] = []
    services = RoleServices(
        metrics=metrics,
        readiness=lambda: [ComponentStatus("processor", ready, "" if ready else "joining the group")],
        status=lambda: {"role": "process", "events_per_s": 42.0},
        on_startup=[lambda: started.append("start")], on_shutdown=[lambda: started.append("stop")],
    )
    health, readiness, status, exposition = call(create_status_app(services, "citywatch process"),
                                                 "/healthz", "/readyz", "/v1/status", "/metrics")
    assert health.json() == {"status": "ok"}
    assert readiness.status_code == (200 if ready else 503)
    assert status.json()["events_per_s"] == 42.0
    assert 'citywatch_events_per_second{role="process"} 42.0' in exposition.text
    assert started == ["start", "stop"]
