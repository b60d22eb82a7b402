"""Events per second over a sliding window of wall time, for the metrics and status of each role."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class RateMeter:
    """Counts in one-second buckets; `rate()` is the mean over the last `window_s` complete seconds."""

    def __init__(self, window_s: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        # (whole second, count), oldest first; at most window_s + 1 buckets.
        self._buckets: deque[tuple[int, int]] = deque()
        self.total = 0

    def add(self, count: int) -> None:
        second = int(self._clock())
        with self._lock:
            self.total += count
            if self._buckets and self._buckets[-1][0] == second:
                self._buckets[-1] = (second, self._buckets[-1][1] + count)
            else:
                self._buckets.append((second, count))
            self._trim(second)

    def rate(self) -> float:
        now = int(self._clock())
        with self._lock:
            self._trim(now)
            # The current second is still filling: judge on the complete ones only.
            complete = sum(count for second, count in self._buckets if second < now)
        return complete / self.window_s

    def _trim(self, now: int) -> None:
        while self._buckets and self._buckets[0][0] < now - self.window_s:
            self._buckets.popleft()
