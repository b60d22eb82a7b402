"""Keyed rule state with event-time expiry and a snapshot.

Events reach rules in event-time order, so "last touched" order is insertion order: an OrderedDict with
move-to-end gives O(1) expiry from the front instead of a scan of every key.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import msgspec


class _Entry(msgspec.Struct):
    """One key's state and the event time of the newest event judged for it."""

    state: Any
    # Event time of the newest event judged for this key: older events for it are late.
    last_time_ms: int


class KeyedState:
    def __init__(self, ttl_ms: int, state_type: type[msgspec.Struct]) -> None:
        self.ttl_ms = ttl_ms
        self.state_type = state_type
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # The engine's hot path, one lookup per rule call: the dictionary's own methods, called without a
        # Python frame in between (`lookup(key)`: the key's entry or None; `touch(key)`: mark a key the
        # newest after updating its entry in place, `replace`'s rules).
        self.lookup: Callable[[str], _Entry | None] = self._entries.get
        self.touch: Callable[[str], None] = self._entries.move_to_end

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def get(self, key: str) -> Any | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.state

    def last_time_ms(self, key: str) -> int | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.last_time_ms

    def set(self, key: str, state: Any | None, time_ms: int) -> None:
        """Store the key's state after judging an event at `time_ms`; None discards it."""
        self.replace(key, self._entries.get(key), state, time_ms)

    def replace(self, key: str, entry: _Entry | None, state: Any | None, time_ms: int) -> None:
        """`set` for a key whose entry the caller has just looked up with `lookup` (the engine's hot
        path: one dictionary lookup per rule call instead of two)."""
        if state is None:
            if entry is not None:
                del self._entries[key]
        elif entry is None:
            self._entries[key] = _Entry(state, time_ms)
        else:
            entry.state = state
            if time_ms > entry.last_time_ms:
                entry.last_time_ms = time_ms
            self._entries.move_to_end(key)

    def expire(self, watermark_ms: int) -> int:
        """Drop keys untouched for ttl_ms before the watermark; returns how many were dropped."""
        dropped = 0
        horizon = watermark_ms - self.ttl_ms
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if entry.last_time_ms > horizon:
                break
            del entries[key]
            dropped += 1
        return dropped

    def snapshot(self) -> list[tuple[str, Any, int]]:
        return [(key, entry.state, entry.last_time_ms) for key, entry in self._entries.items()]

    def restore(self, rows: list[Any]) -> None:
        self._entries.clear()
        for key, raw_state, last_time_ms in sorted(rows, key=lambda row: row[2]):
            state = msgspec.convert(raw_state, self.state_type)
            self._entries[key] = _Entry(state, last_time_ms)
