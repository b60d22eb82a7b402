"""The forecast fit is robust to one outlier: whatever the line, the noise and where the outlier sits."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.sanitation_settings import BinNearFullSettings
from processors.rules import bin_near_full
from processors.rules.bin_near_full import BinNearFullRule, fit_fill
from tests.support.events import reading
from tests.support.rules import run_all

PROPS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=300)
HOUR_MS = 3_600_000


@PROPS
@given(
    count=st.integers(min_value=5, max_value=40),
    slope=st.floats(min_value=1, max_value=20),
    start=st.floats(min_value=0, max_value=40),
    jump=st.floats(min_value=20, max_value=60),
    where=st.floats(min_value=0, max_value=1),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_a_single_outlier_is_dropped_and_the_slope_recovered(count, slope, start, jump, where, seed):
    rng = random.Random(seed)
    step_h = 0.25
    points = [(f"e{i}", i * int(step_h * HOUR_MS), start + slope * i * step_h + rng.uniform(-0.5, 0.5))
              for i in range(count)]
    bad = min(count - 1, int(where * count))
    event_id, time_ms, fill = points[bad]
    points[bad] = (event_id, time_ms, fill + jump)
    fit = fit_fill(points, outlier_pct=8)
    assert fit.dropped is not None and fit.dropped[0] == event_id
    assert fit.slope_pct_per_h == pytest.approx(slope, abs=1.5)


@PROPS
@given(count=st.integers(min_value=4, max_value=40), slope=st.floats(min_value=1, max_value=20),
       seed=st.integers(min_value=0, max_value=2**16))
def test_noise_alone_is_never_dropped(count, slope, seed):
    rng = random.Random(seed)
    points = [(f"e{i}", i * HOUR_MS // 4, 10 + slope * i / 4 + rng.uniform(-1, 1)) for i in range(count)]
    assert fit_fill(points, outlier_pct=8).dropped is None


@PROPS
@given(
    fills=st.lists(st.floats(min_value=0, max_value=120), min_size=4, max_size=48),
    gaps_s=st.lists(st.integers(min_value=1, max_value=7200), min_size=48, max_size=48),
    outlier_pct=st.floats(min_value=0.5, max_value=30),
)
def test_skipping_the_outlier_search_never_changes_the_fit(fills, gaps_s, outlier_pct):
    """The bound that lets most readings skip the per-reading search only skips it when the search
    would have dropped nothing."""
    times = [sum(gaps_s[:i]) * 1000 for i in range(len(fills))]
    points = [(f"e{i}", time_ms, fill) for i, (time_ms, fill) in enumerate(zip(times, fills, strict=False))]
    quick = fit_fill(points, outlier_pct)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bin_near_full, "_may_have_outlier", lambda *_: True)
        searched = fit_fill(points, outlier_pct)
    assert quick == searched



@PROPS
@given(
    steps=st.lists(st.tuples(st.integers(min_value=60, max_value=3 * 3600),
                             st.floats(min_value=-60, max_value=15)), min_size=5, max_size=300),
)
def test_running_sums_forecast_as_a_fit_over_the_kept_readings(steps):
    """Sums kept while readings come, leave the window and are emptied forecast what a fresh fit over the
    kept readings forecasts (to the second), and open the same violations."""
    at_s, fill, events = 0, 20.0, []
    for gap_s, change in steps:
        at_s += gap_s
        fill = min(100.0, max(0.0, fill + change))
        events.append(reading("bin-p", at_s, fill_pct=fill))
    settings = BinNearFullSettings(max_points=12, fit_window_s=6 * 3600)
    kept = run_all([BinNearFullRule(settings)], events)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bin_near_full, "REBUILD_SUMS_EVERY", 0)  # sums rebuilt from the readings every time
        fresh = run_all([BinNearFullRule(settings)], events)
    assert [v.violation_id for v in kept.violations] == [v.violation_id for v in fresh.violations]
    assert len(kept.records) == len(fresh.records)
    for ours, theirs in zip(kept.records, fresh.records, strict=True):
        if theirs.predicted_time_ms is None or ours.predicted_time_ms is None:
            assert ours.predicted_time_ms == theirs.predicted_time_ms
        else:
            # To the second, or to a millionth of the time still to go (a nearly flat line's crossing
            # is centuries away and moves with the last bit of the slope).
            ahead_ms = abs(theirs.predicted_time_ms - theirs.computed_time_ms)
            assert abs(ours.predicted_time_ms - theirs.predicted_time_ms) <= max(1000, ahead_ms * 1e-6)
