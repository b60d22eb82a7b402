"""Wakes stream clients on the API's event loop when the processor thread publishes to the feed.

One feed listener per API, not one per client: a publish costs one `call_soon_threadsafe`, which
swaps in a fresh asyncio.Event and sets the old one, waking every waiting client at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from api.alerts.stream_hub import StreamHub
from processors.outputs.feed import FeedEntry, ViolationFeed


class FeedWaiter:
    def __init__(self, feed: ViolationFeed) -> None:
        self.feed = feed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()
        # Routes new changes to the stream clients that caught up, once each (api/alerts/stream_hub.py).
        self.hub = StreamHub(feed, self)
        feed.add_listener(self._on_publish)

    def _on_publish(self, entries: Sequence[FeedEntry]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_after(self, seq: int, timeout_s: float) -> None:
        """Return once the feed holds something after `seq`, or after `timeout_s`."""
        self._loop = asyncio.get_running_loop()
        event = self._event
        if self.feed.last_seq > seq:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)
