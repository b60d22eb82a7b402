"""A trailing event-time mean with bounded state: readings go into fixed-width buckets (e.g. minutes
for a 1-hour mean, hours for a 24-hour mean); buckets older than the span are evicted.

The mean is the mean of the bucket means, so a sensor that reports faster for a while does not weigh
more (the way the ambient-air standard builds a 24-hour mean from hourly means); `coverage` is how many
buckets have data, for the standard's data-validity rule (e.g. at least 45 minutes in an hour).
Readings must arrive in event-time order, which the engine guarantees per key.
"""

from __future__ import annotations

import msgspec


class RollingMean(msgspec.Struct):
    bucket_ms: int
    span_ms: int
    starts: list[int] = []
    sums: list[float] = []
    counts: list[int] = []

    def add(self, time_ms: int, value: float) -> None:
        start = time_ms - time_ms % self.bucket_ms
        if self.starts and self.starts[-1] == start:
            self.sums[-1] += value
            self.counts[-1] += 1
        else:
            self.starts.append(start)
            self.sums.append(value)
            self.counts.append(1)
        self.evict(time_ms)

    def evict(self, now_ms: int) -> None:
        # A bucket leaves once it lies wholly before the window (now - span, now].
        horizon = now_ms - self.span_ms
        drop = 0
        while drop < len(self.starts) and self.starts[drop] + self.bucket_ms <= horizon:
            drop += 1
        if drop:
            del self.starts[:drop], self.sums[:drop], self.counts[:drop]

    @property
    def coverage(self) -> int:
        """Buckets with data (e.g. hours with readings in a 24-hour window)."""
        return len(self.starts)

    @property
    def covered_ms(self) -> int:
        """Time from the start of the oldest bucket to the end of the newest: how much of the window
        the readings span (a sensor reporting every 10 minutes spans an hour with 6 buckets)."""
        if not self.starts:
            return 0
        return self.starts[-1] + self.bucket_ms - self.starts[0]

    def covered_without_gaps_ms(self, max_gap_ms: int | None) -> int:
        """Like `covered_ms`, but a stretch between two readings further apart than `max_gap_ms` (a
        missing report) counts only the earlier reading's bucket: silence is not sampling time. None:
        no interval is known, every stretch counts (`covered_ms`)."""
        if max_gap_ms is None or not self.starts:
            return self.covered_ms
        covered = self.bucket_ms
        for earlier, later in zip(self.starts, self.starts[1:], strict=False):
            step = later - earlier
            covered += step if step <= max_gap_ms else self.bucket_ms
        return covered

    def mean(self) -> float | None:
        if not self.starts:
            return None
        return sum(s / c for s, c in zip(self.sums, self.counts, strict=True)) / len(self.starts)


def hourly_window() -> RollingMean:
    return RollingMean(bucket_ms=60_000, span_ms=3_600_000)


def daily_window() -> RollingMean:
    return RollingMean(bucket_ms=3_600_000, span_ms=24 * 3_600_000)
