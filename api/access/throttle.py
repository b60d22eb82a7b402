"""Failed authentications per client address: past `limit` unknown keys in `window_s`, the address is
answered 429 until its window ends, whatever key it sends.

Keys carry 256 bits, so guessing one is hopeless anyway; the throttle keeps a misbehaving or hostile
client from spending the API's time and filling its logs, and makes it visible in a metric. The table
holds at most `max_addresses` entries: the least recently failing address is forgotten first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

MAX_ADDRESSES: Final = 10_000


@dataclass
class _Failures:
    window_start: float
    count: int


class FailedAuthThrottle:
    def __init__(self, limit: int, window_s: float, *, max_addresses: int = MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window_s <= 0 or max_addresses < 1:
            raise ValueError("limit and max_addresses must be at least 1, window_s above 0")
        self.limit = limit
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after_s(self, address: str) -> float:
        """0 when the address may try to authenticate, else the seconds until it may again."""
        now = self._clock()
        with self._lock:
            entry = self._failures.get(address)
            if entry is None or entry.count < self.limit:
                return 0.0
            remaining = entry.window_start + self.window_s - now
            if remaining <= 0:
                del self._failures[address]
                return 0.0
            return remaining

    def record_failure(self, address: str) -> None:
        now = self._clock()
        with self._lock:
            entry = self._failures.get(address)
            if entry is None or now - entry.window_start >= self.window_s:
                entry = self._failures[address] = _Failures(window_start=now, count=0)
            entry.count += 1
            self._failures.move_to_end(address)
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failures)
