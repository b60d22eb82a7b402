"""An SSE client of a running citywatch API, collecting the violation changes it is streamed."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx


class StreamClient:
    """An SSE client of one api replica, collecting the changes it is sent."""

    def __init__(self, base_url: str) -> None:
        self.url = base_url + "/v1/stream/violations"
        self.changes: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def start(self) -> StreamClient:
        self._thread.start()
        assert self.connected.wait(10), "the SSE stream did not open"
        return self

    def _listen(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=httpx.Timeout(10, read=None)) as response:
                self.connected.set()
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("data: "):
                        self.changes.append(json.loads(line[6:]))
        except httpx.HTTPError:
            return  # the replica stopped

    def close(self) -> None:
        self._stop.set()  # seen at the next line: a change or a heartbeat
        self._thread.join(10)

    def keys(self) -> list[str]:
        return [change["idempotency_key"] for change in self.changes]
