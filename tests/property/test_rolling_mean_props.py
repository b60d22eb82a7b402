"""The bounded rolling mean equals a brute-force mean over every reading kept, for any feed in order."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.rules.rolling_mean import RollingMean

PROPS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200)

BUCKET_MS = 60_000
SPAN_MS = 3_600_000

readings = st.lists(
    st.tuples(st.integers(min_value=0, max_value=30 * 60_000), st.floats(min_value=0, max_value=1000)),
    min_size=1, max_size=200,
)


def brute_force(feed: list[tuple[int, float]], now_ms: int) -> tuple[float | None, int]:
    """Mean of bucket means over the buckets not wholly before (now - span, now]."""
    buckets: dict[int, list[float]] = defaultdict(list)
    for time_ms, value in feed:
        start = time_ms - time_ms % BUCKET_MS
        if start + BUCKET_MS > now_ms - SPAN_MS:
            buckets[start].append(value)
    if not buckets:
        return None, 0
    return sum(sum(v) / len(v) for v in buckets.values()) / len(buckets), len(buckets)


@PROPS
@given(readings)
def test_rolling_mean_matches_brute_force(steps):
    window = RollingMean(bucket_ms=BUCKET_MS, span_ms=SPAN_MS)
    feed: list[tuple[int, float]] = []
    time_ms = 1_700_000_000_000
    for gap_ms, value in steps:
        time_ms += gap_ms  # in event-time order, gaps up to 30 minutes
        window.add(time_ms, value)
        feed.append((time_ms, value))
        expected_mean, expected_buckets = brute_force(feed, time_ms)
        assert window.coverage == expected_buckets <= SPAN_MS // BUCKET_MS + 1
        assert window.mean() == pytest.approx(expected_mean)


@PROPS
@given(readings, st.integers(min_value=BUCKET_MS, max_value=10 * BUCKET_MS))
def test_coverage_without_gaps_never_exceeds_the_span_and_equals_it_without_gaps(steps, max_gap_ms):
    window = RollingMean(bucket_ms=BUCKET_MS, span_ms=SPAN_MS)
    time_ms = 0
    for step_ms, value in steps:
        time_ms += step_ms
        window.add(time_ms, value)
    assert window.covered_without_gaps_ms(None) == window.covered_ms
    covered = window.covered_without_gaps_ms(max_gap_ms)
    assert window.bucket_ms <= covered <= window.covered_ms
    gaps = [later - earlier for earlier, later in zip(window.starts, window.starts[1:], strict=False)]
    if all(gap <= max_gap_ms for gap in gaps):
        assert covered == window.covered_ms
