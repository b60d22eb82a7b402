"""A feed listener that hands changes to its own thread through a bounded queue.

Output topics must never slow the pipeline: the listener only enqueues (a full queue drops the change
and counts it, with a warning); a dedicated thread connects, sends and retries at its own pace.
"""

from __future__ import annotations

import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence

from processors.outputs.feed import FeedEntry

log = logging.getLogger(__name__)

_STOP = object()


class QueuedOutput(ABC):
    name = "output"

    def __init__(self, capacity: int = 100_000, events: Collection[str] | None = None) -> None:
        self._queue: queue.Queue[object] = queue.Queue(capacity)
        self._thread: threading.Thread | None = None
        # The kinds of change this output sends (FeedEntry.event); None: every kind.
        self._events = frozenset(events) if events is not None else None
        self.sent = 0
        self.dropped = 0
        self.failed = 0

    def __call__(self, entries: Sequence[FeedEntry]) -> None:
        for entry in entries:
            if self._events is not None and entry.event not in self._events:
                continue
            try:
                self._queue.put_nowait(entry)
            except queue.Full:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("%s output queue full: %d violation changes dropped so far", self.name,
                                self.dropped)

    def start(self) -> None:
        self.connect()
        self._thread = threading.Thread(target=self._run, name=f"citywatch-{self.name}-out", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (up to `timeout_s`), then close."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        self._thread = None
        self.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            assert isinstance(item, FeedEntry)
            batch = [item]
            # Take what else is waiting, to send in one go.
            while len(batch) < 1000:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._send_logged(batch)
                    return
                assert isinstance(more, FeedEntry)
                batch.append(more)
            self._send_logged(batch)

    def _send_logged(self, batch: list[FeedEntry]) -> None:
        try:
            self.send(batch)
            self.sent += len(batch)
        except Exception:
            self.failed += len(batch)
            log.exception("%s output failed to send %d violation changes", self.name, len(batch))

    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def send(self, entries: Sequence[FeedEntry]) -> None: ...

    @abstractmethod
    def close(self) -> None: ...
