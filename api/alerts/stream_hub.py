"""What the live stream clients of one feed share: the routing of each new change once to the clients that
want it, instead of every client reading and filtering the whole feed, and each change's message,
presented and encoded once instead of once per client.

A stream client (api/alerts/streams.py) that has caught up with the feed attaches here with its filter and
its queue. One task per event loop reads each new change once, finds the attached clients whose filter
wants it through a FilterIndex (api/alerts/filters.py), and puts it in their queues: with 500 clients each
on one grid, a change costs a lookup and the few queues of its grid, not 500 filter checks and 500
wake-ups. A client whose queue is full is detached at the change it missed and reads the feed on its own
again from there, as before: it waits for room, is cut off with `too_slow` once it falls more than
`stream_max_lag` behind, or attaches again once it has caught up. The hub never waits for a client.

Messages (`SharedMessages`): a change is presented (masked, or not for a key with `plates`) and encoded as
JSON once per visibility, kept for the last few thousand changes, and the same text is written to every
client that is sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from api.alerts.filters import FilterIndex, ViolationFilter
from core.masking import present_violation
from processors.outputs.feed import CursorExpired, FeedEntry, ViolationFeed

if TYPE_CHECKING:
    from api.alerts.waiter import FeedWaiter

# Changes read from the feed at once.
READ_BATCH = 500
# How long the routing task waits for a change before it looks whether anyone is still attached.
_IDLE_CHECK_S = 1.0
# Messages kept presented and encoded (per visibility): more than the clients' queues hold together
# are read at once, so a client rarely presents a change itself.
SHARED_MESSAGES = 4096


class Outgoing(NamedTuple):
    """A change as it goes out: its id, its message, and the message as JSON text."""

    id: str
    message: dict[str, Any]
    text: str


class SharedMessages:
    """Each change's message presented and encoded once per plates visibility, for every client. The
    messages are shared: nothing may change them."""

    def __init__(self, feed: ViolationFeed, size: int = SHARED_MESSAGES) -> None:
        self.feed = feed
        self.size = size
        self._items: dict[tuple[int, bool], Outgoing] = {}

    def get(self, entry: FeedEntry, plates: bool) -> Outgoing:
        key = (entry.seq, plates)
        item = self._items.get(key)
        if item is None:
            change_id = self.feed.cursor(entry.seq)
            violation = None if entry.violation is None else present_violation(entry.violation, plates=plates)
            message = entry.message(change_id, violation)
            item = Outgoing(change_id, message, json.dumps(message, ensure_ascii=False))
            if len(self._items) >= self.size:
                del self._items[next(iter(self._items))]  # the oldest kept
            self._items[key] = item
        return item


@dataclass(eq=False)
class Route:
    """One attached client: where its changes go, and where it stands once detached."""

    queue: asyncio.Queue[FeedEntry | None]
    # The client had read the feed up to here on its own: changes up to it are not routed again.
    after: int
    detached: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when detached: the client reads the feed on its own after this sequence.
    cursor: int = 0
    # Changes put in its queue (the client's pump sends a heartbeat only when none came for a while).
    routed: int = 0


class StreamHub:
    def __init__(self, feed: ViolationFeed, waiter: FeedWaiter) -> None:
        self.feed = feed
        self.waiter = waiter
        self.messages = SharedMessages(feed)
        self._index: FilterIndex[Route] = FilterIndex()
        # The last change routed (every change up to it was offered to every attached client).
        self._cursor = 0
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def attached(self) -> int:
        return len(self._index)

    def attach(self, cursor: int, filter: ViolationFilter,
               queue: asyncio.Queue[FeedEntry | None]) -> Route | None:
        """Attach a client that has read the feed up to `cursor`; None when the hub has routed changes
        after it already (the client reads on its own until it caught up, then attaches)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._task is None or self._task.done():
            # The first client, or the first since the routing task ended (or on another event loop).
            self._loop = loop
            self._index = FilterIndex()
            self._cursor = self.feed.last_seq
            self._task = loop.create_task(self._route_forever(), name="citywatch-stream-hub")
        if cursor < self._cursor:
            return None
        route = Route(queue, after=cursor)
        self._index.add(route, filter)
        return route

    def detach(self, route: Route, cursor: int | None = None) -> None:
        """Stop routing to `route`; it reads on its own after `cursor` (default: the last change routed)."""
        if route.detached.is_set():
            return
        self._index.remove(route)
        route.cursor = self._cursor if cursor is None else cursor
        route.detached.set()

    async def _route_forever(self) -> None:
        index = self._index
        try:
            while len(index):
                await self.waiter.wait_after(self._cursor, _IDLE_CHECK_S)
                try:
                    entries = self.feed.read_after(self._cursor, READ_BATCH)
                except CursorExpired:
                    # Fallen out of the window (a stalled loop): each client finds out on its own.
                    self._detach_all(index)
                    return
                for entry in entries:
                    for route in index.matching(entry):
                        if entry.seq <= route.after:
                            continue
                        try:
                            route.queue.put_nowait(entry)
                            route.routed += 1
                        except asyncio.QueueFull:
                            self.detach(route, entry.seq - 1)
                    self._cursor = entry.seq
        finally:
            self._detach_all(index)

    def _detach_all(self, index: FilterIndex[Route]) -> None:
        if index is self._index:
            for route in list(index):
                self.detach(route)


async def wait_detached(route: Route, timeout_s: float) -> bool:
    """Whether the route was detached within `timeout_s`."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(route.detached.wait(), timeout_s)
    return route.detached.is_set()
