"""A stream client that stops reading is cut off with `too_slow`; the others and the feed never wait.
Every message goes out as the client's key is at that moment: masked once it lost `plates`, not at all
once it was revoked.

The socket is the boundary here: `send` stands for writing to a client, and a send that never returns
is a client whose socket stopped draining. The integration tests run the same sessions over uvicorn.
"""

from __future__ import annotations

import asyncio

from api.access.control import ANONYMOUS, AccessControl
from api.access.keys import ApiKey, Scope
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


def test_every_message_goes_out_as_the_key_is_now_and_a_revoked_key_ends_the_stream() -> None:
    plates = ApiKey("k1", "dispatch", frozenset({Scope.VIOLATIONS_READ, Scope.PLATES}), 0)
    narrowed = ApiKey("k1", "dispatch", frozenset({Scope.VIOLATIONS_READ}), 0)
    current: list[ApiKey | None] = [plates]

    async def scenario() -> tuple[StreamEnded | None, list[dict[str, object]]]:
        feed = ViolationFeed(100)
        waiter = FeedWaiter(feed)
        s = StreamSession(feed=feed, waiter=waiter, access=AccessControl.open(), key=plates,
                          filter=ViolationFilter(), max_lag=100, heartbeat_s=0.02, action="test",
                          current_key=lambda: current[0])
        s.start_at(None)
        sent: list[dict[str, object]] = []

        async def send(item: StreamItem) -> None:
            if item is not None:
                sent.append(item[1])

        async def until(count: int) -> None:
            while len(sent) < count:
                await asyncio.sleep(0.001)

        run = asyncio.create_task(s.run(send, asyncio.get_running_loop().create_future()))
        feed.publish([violation(1)])
        await asyncio.wait_for(until(1), 10)
        current[0] = narrowed  # the plates scope was taken away
        feed.publish([violation(2)])
        await asyncio.wait_for(until(2), 10)
        current[0] = None  # revoked
        feed.publish([violation(3)])
        return await asyncio.wait_for(run, 10), sent

    ended, sent = asyncio.run(scenario())
    assert [m["violation"]["evidence"]["plate"] for m in sent] == ["粤B12345", "粤B1****"]  # type: ignore[index]
    assert ended is not None and ended.code == "key_revoked"


def test_a_key_that_lost_violations_read_ends_an_idle_stream_at_the_next_heartbeat() -> None:
    reader = ApiKey("k2", "wall", frozenset({Scope.VIOLATIONS_READ}), 0)
    current: list[ApiKey | None] = [ApiKey("k2", "wall", frozenset({Scope.READINGS_READ}), 0)]

    async def scenario() -> StreamEnded | None:
        feed = ViolationFeed(100)
        s = StreamSession(feed=feed, waiter=FeedWaiter(feed), access=AccessControl.open(), key=reader,
                          filter=ViolationFilter(), max_lag=100, heartbeat_s=0.02, action="test",
                          current_key=lambda: current[0])
        s.start_at(None)

        async def send(item: StreamItem) -> None:
            assert item is None, "nothing was published: only heartbeats"

        return await asyncio.wait_for(s.run(send, asyncio.get_running_loop().create_future()), 10)

    ended = asyncio.run(scenario())
    assert ended is not None and ended.code == "key_lacks_scope" and "violations:read" in ended.detail


def test_clients_on_different_grids_each_get_only_their_grid_in_order_and_a_resuming_client_misses_none(
) -> None:
    grids = [f"G-{n:02d}" for n in range(20)]

    async def scenario() -> tuple[dict[tuple[str, int], list[str]], list[str], int]:
        feed = ViolationFeed(10_000)
        waiter = FeedWaiter(feed)
        loop = asyncio.get_running_loop()

        def client(grid: str | None, since: str | None) -> tuple[list[str], asyncio.Task[StreamEnded | None]]:
            s = StreamSession(feed=feed, waiter=waiter, access=AccessControl.open(), key=ANONYMOUS,
                              filter=ViolationFilter(grid=(grid,) if grid else ()), max_lag=10_000,
                              heartbeat_s=0.02, action="test")
            s.start_at(since)
            into: list[str] = []

            async def send(item: StreamItem) -> None:
                if item is not None:
                    into.append(item[1]["violation"]["violation_id"])

            return into, asyncio.create_task(s.run(send, loop.create_future()))

        clients = {(grid, n): client(grid, None) for grid in grids for n in range(3)}
        while waiter.hub.attached < len(clients):  # every live client is routed by the hub
            await asyncio.sleep(0.001)
        resumed: list[str] = []
        for start in range(1, 2001, 50):
            feed.publish([violation(n, grid=grids[n % len(grids)]) for n in range(start, start + 50)])
            await asyncio.sleep(0)
            if start == 1001:
                # A client reconnecting from the start reads the backlog itself, then joins the live ones.
                resumed, task = client(None, "earliest")
                clients[("all", 0)] = resumed, task
        while len(resumed) < 2000 or any(len(into) < 100 for into, _ in clients.values()):
            await asyncio.sleep(0.001)
        attached = waiter.hub.attached
        for _, task in clients.values():
            task.cancel()
        return {name: into for name, (into, _) in clients.items() if name[0] != "all"}, resumed, attached

    received, resumed, attached = asyncio.run(asyncio.wait_for(scenario(), 60))
    for (grid, _), into in received.items():
        assert into == [f"v{n:04d}" for n in range(1, 2001) if grids[n % len(grids)] == grid]
    assert resumed == [f"v{n:04d}" for n in range(1, 2001)]
    assert attached == 3 * len(grids) + 1


def test_a_client_that_connects_between_a_publish_and_its_routing_gets_only_later_changes() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        feed = ViolationFeed(100)
        waiter = FeedWaiter(feed)
        loop = asyncio.get_running_loop()

        def client() -> list[str]:
            s = StreamSession(feed=feed, waiter=waiter, access=AccessControl.open(), key=ANONYMOUS,
                              filter=ViolationFilter(), max_lag=100, heartbeat_s=0.02, action="test")
            s.start_at(None)  # from the next change on
            into: list[str] = []

            async def send(item: StreamItem) -> None:
                if item is not None:
                    into.append(item[1]["violation"]["violation_id"])

            tasks.append(asyncio.create_task(s.run(send, loop.create_future())))
            return into

        tasks: list[asyncio.Task[StreamEnded | None]] = []
        first = client()
        while waiter.hub.attached < 1:
            await asyncio.sleep(0.001)
        feed.publish([violation(1)])
        second = client()  # the hub has not routed v0001 yet: the second client must not get it
        while waiter.hub.attached < 2:
            await asyncio.sleep(0)
        feed.publish([violation(2)])
        while len(first) < 2 or len(second) < 1:
            await asyncio.sleep(0.001)
        for task in tasks:
            task.cancel()
        return first, second

    first, second = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert first == ["v0001", "v0002"] and second == ["v0002"]
