"""A bounded in-memory bus for one machine: ingest threads produce, one processor thread consumes."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence

from core.models import DeadLetter, Event
from processors.bus import Batch, BusClosed, BusConsumer, BusFull, BusProducer, OnDurable


class InProcessBus:
    """The queue both ends share. `capacity` bounds the items held; a full bus blocks the producer."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Event | DeadLetter] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def producer(self) -> InProcessProducer:
        return InProcessProducer(self)

    def consumer(self) -> InProcessConsumer:
        return InProcessConsumer(self)

    def close(self) -> None:
        """Stop accepting items; the consumer still drains what is queued."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    def _put(self, items: Sequence[Event | DeadLetter], timeout_s: float | None) -> None:
        with self._lock:
            if not self._closed and len(self._items) + len(items) <= self.capacity:
                # Room for all of them: most hand-overs (one message's events, a bus with room).
                self._items.extend(items)
                self._not_empty.notify()
                return
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        start = 0
        with self._lock:
            while start < len(items):
                if self._closed:
                    raise BusClosed("the in-process bus is closed")
                room = self.capacity - len(self._items)
                if room <= 0:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise BusFull(f"in-process bus full ({self.capacity} items)")
                    self._not_full.wait(remaining)
                    continue
                chunk = items[start:start + room]
                self._items.extend(chunk)
                start += len(chunk)
                self._not_empty.notify()

    def _take(self, max_items: int, timeout_s: float) -> Batch:
        batch = Batch()
        with self._lock:
            if not self._items and not self._closed:
                self._not_empty.wait(timeout_s)
            count = min(max_items, len(self._items))
            for _ in range(count):
                item = self._items.popleft()
                if isinstance(item, Event):
                    batch.events.append(item)
                else:
                    batch.dead_letters.append(item)
            if count:
                self._not_full.notify_all()
        return batch

    @property
    def drained(self) -> bool:
        return self._closed and not self._items


class InProcessProducer(BusProducer):
    def __init__(self, bus: InProcessBus) -> None:
        self._bus = bus

    def send(self, events: Sequence[Event], dead_letters: Sequence[DeadLetter] = (), *,
             timeout_s: float | None = None, on_durable: OnDurable | None = None) -> None:
        items: Sequence[Event | DeadLetter] = [*events, *dead_letters] if dead_letters else events
        if items:
            self._bus._put(items, timeout_s)
        if on_durable is not None:
            # The bus lives in this process: items on it are as safe as they get (the processor's
            # clean stop drains it). The MQTT acknowledgement goes out at hand-over, as before.
            on_durable(None)

    def flush(self, timeout_s: float | None = None) -> None:
        """Items are on the bus as soon as `send` returns."""


class InProcessConsumer(BusConsumer):
    def __init__(self, bus: InProcessBus) -> None:
        self._bus = bus

    def poll(self, max_items: int, timeout_s: float) -> Batch:
        return self._bus._take(max_items, timeout_s)

    def commit(self) -> None:
        """Nothing to do: in memory there is no redelivery to prevent."""

    @property
    def drained(self) -> bool:
        return self._bus.drained
