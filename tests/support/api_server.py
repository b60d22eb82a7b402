"""Serve an app with uvicorn in a thread on a free port, for tests that talk HTTP to it."""

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
def serve(app: FastAPI) -> Iterator[httpx.Client]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-api", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 10, 0.02, "the test API server to start")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)
