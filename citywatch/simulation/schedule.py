"""Scripted messages released when the simulated clock reaches them.

The feed is driven by whoever calls `FeedGenerator.round(now_ms)`: the live simulator once a second, a
test or benchmark at any step. Scripted devices (signal plans, camera scenes, detector intervals) do not
report once per round but at their own times, so they put their messages here with their event times and
each round takes what has fallen due since the last one. A round every second or every ten seconds
therefore gives the same messages with the same times; only how they are batched differs.
"""

from __future__ import annotations

import heapq
from itertools import count

from citywatch.simulation.wire import Message


class Timeline:
    def __init__(self) -> None:
        self._pending: list[tuple[int, int, Message]] = []
        self._order = count()  # messages at the same time keep the order they were scheduled in

    def at(self, time_ms: int, message: Message) -> None:
        heapq.heappush(self._pending, (time_ms, next(self._order), message))

    def due(self, now_ms: int) -> list[Message]:
        """The messages scheduled at or before `now_ms`, oldest first."""
        released = []
        while self._pending and self._pending[0][0] <= now_ms:
            released.append(heapq.heappop(self._pending)[2])
        return released


class Cycles:
    """Numbers the repeats of a script of `period_ms` that begin at or before a time, from `start_ms`."""

    def __init__(self, period_ms: int) -> None:
        self.period_ms = period_ms
        self.start_ms: int | None = None
        self._next = 0

    def begun(self, now_ms: int) -> list[tuple[int, int]]:
        """(cycle number, cycle start) of the cycles that began since the last call; the first call
        starts the clock at `now_ms`."""
        if self.start_ms is None:
            self.start_ms = now_ms
        begun = []
        while self.start_ms + self._next * self.period_ms <= now_ms:
            begun.append((self._next, self.start_ms + self._next * self.period_ms))
            self._next += 1
        return begun
