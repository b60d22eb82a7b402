"""A stream client that stops reading is cut off with `too_slow`; the others and the feed never wait.

The socket is the boundary here: `send` stands for writing to a client, and a send that never returns
is a client whose socket stopped draining. The integration tests run the same sessions over uvicorn.
"""

from __future__ import annotations

import asyncio

from api.access.control import ANONYMOUS, AccessControl
from api.alerts.filters import ViolationFilter
from api.alerts.streams import StreamEnded, StreamItem, StreamSession
from api.alerts.waiter import FeedWaiter
from processors.outputs.feed import ViolationFeed
from tests.support.alerts import violation


def session(feed: ViolationFeed, waiter: FeedWaiter, max_lag: int) -> StreamSession:
    s = StreamSession(feed=feed, waiter=waiter, access=AccessControl.open(), key=ANONYMOUS,
                      filter=ViolationFilter(), max_lag=max_lag, heartbeat_s=0.02, action="test")
    s.start_at("earliest")
    return s


def test_a_client_that_stops_reading_is_cut_off_while_a_reading_client_gets_everything() -> None:
    async def scenario() -> tuple[StreamEnded | None, list[str]]:
        feed = ViolationFeed(10_000)
        waiter = FeedWaiter(feed)
        loop = asyncio.get_running_loop()

        async def stuck(item: StreamItem) -> None:
            await loop.create_future()  # never completes: the client's socket is full

        received: list[str] = []

        async def reading(item: StreamItem) -> None:
            if item is not None:
                received.append(item[1]["violation"]["violation_id"])

        slow = asyncio.create_task(session(feed, waiter, 1000).run(stuck, loop.create_future()))
        fast = asyncio.create_task(session(feed, waiter, 1000).run(reading, loop.create_future()))
        for start in range(1, 3001, 100):
            published = feed.publish([violation(n) for n in range(start, start + 100)])
            assert len(published) == 100  # publishing never waits for any client
            while len(received) < start - 1:
                await asyncio.sleep(0.001)
        ended = await asyncio.wait_for(slow, 10)
        while len(received) < 3000:
            await asyncio.sleep(0.001)
        fast.cancel()
        return ended, received

    ended, received = asyncio.run(scenario())
    assert ended is not None and ended.code == "too_slow" and "behind" in ended.detail
    assert received == [f"v{n:04d}" for n in range(1, 3001)]
