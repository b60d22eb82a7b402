"""A generated week of 50 bins (33,600 readings with noise and outliers) against its ground truth.

Stated accuracy of the near-full forecast, at the moment each alert opens (2 h horizon) and for the
fill cycles that really reached 100% before a collection round: median error under 10 minutes, 90th
percentile under 15 minutes, none over an hour (measured: about 3, 8.5 and 41 minutes).
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.district_week import BinTruth, all_events, generate_week
from core.models import Violation, ViolationStatus
from core.sanitation_settings import BinNearFullSettings
from core.settings import BinOverflowSettings
from processors.engine import Engine
from processors.rules.bin_near_full import BinNearFullRule
from processors.rules.bin_overflow import BinOverflowRule

NOISE_PCT = 1.0


@pytest.fixture(scope="module")
def week() -> tuple[list[BinTruth], list[Violation]]:
    truths = generate_week(bins=50, noise_pct=NOISE_PCT)
    engine = Engine([BinOverflowRule(BinOverflowSettings()), BinNearFullRule(BinNearFullSettings())],
                    allowed_lateness_ms=0)
    out = engine.process(all_events(truths), now_wall_ms=0)
    out.extend(engine.drain())
    return truths, out.violations


def opened(violations: list[Violation], type_: str, device_id: str) -> list[Violation]:
    return [v for v in violations if v.type == type_ and v.device_id == device_id
            and v.status is ViolationStatus.OPEN]


def test_every_overflow_is_found_and_none_is_invented(week):
    truths, violations = week
    sure = 90 + 3 * NOISE_PCT  # true fill this high reads at least 90 but for a 3-sigma noise draw
    episodes = 0
    for truth in truths:
        found = opened(violations, "bin_overflow", truth.device_id)
        closed = {v.violation_id: v.end_time_ms for v in violations
                  if v.device_id == truth.device_id and v.status is ViolationStatus.CLEARED}
        for previous, current in zip(truth.readings, truth.readings[1:], strict=False):
            if previous.true_fill >= sure and current.true_fill >= sure:
                episodes += 1
                at = current.event.event_time_ms
                assert any(v.start_time_ms <= at and closed.get(v.violation_id, at) >= at for v in found), (
                    f"{truth.device_id} overflowing at {at} without an open violation")
        true_fill = {r.event.event_id: r.true_fill for r in truth.readings}
        for violation in found:
            assert min(true_fill[i] for i in violation.evidence.event_ids) >= 90 - 3 * NOISE_PCT
    assert episodes > 500  # the generator really produced overflows


def test_near_full_forecasts_are_within_the_stated_error(week):
    truths, violations = week
    errors_min = []
    for truth in truths:
        emptied_at = [b.event.event_time_ms for a, b in zip(truth.readings, truth.readings[1:], strict=False)
                      if b.true_fill < a.true_fill - 20]
        for alert in opened(violations, "bin_near_full", truth.device_id):
            at = alert.updated_time_ms
            next_emptying = min((t for t in emptied_at if t > at), default=None)
            full = [t for t in truth.full_times_ms
                    if t >= at - 2 * 3_600_000 and (next_emptying is None or t < next_emptying)]
            if full:
                errors_min.append((alert.evidence.details["predicted_full_ms"] - full[0]) / 60_000)
    errors = np.abs(np.array(errors_min))
    assert len(errors) > 100
    assert np.median(errors) < 10
    assert np.percentile(errors, 90) < 15
    assert errors.max() < 60
