"""Serves an app on a free port from a thread with uvicorn, for API tests over real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from tests.support.process import free_port
from tests.support.wait import wait_for


@contextmanager
def served(app: FastAPI) -> Iterator[httpx.Client]:
    """An httpx client on the running app; the app (and its lifespan) stops when the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-api", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 15, message="the API to start")
        assert server.started, "the API did not start"
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(15)
