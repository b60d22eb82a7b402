"""Every sanitation rule gives the in-order result however its readings are delivered: shuffled within
the allowed lateness and with duplicates. A property of the engine and the rules together."""

from __future__ import annotations

import random

import pytest

from tests.support.rules import run_all
from tests.support.sanitation_scenarios import SCENARIOS


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_shuffled_and_duplicated_delivery_gives_the_in_order_result(name):
    make_rule, in_order = SCENARIOS[name]
    expected = run_all([make_rule()], in_order)
    assert expected.violations, f"scenario {name} must raise something to be a test"
    rng = random.Random(name)
    for _ in range(10):
        delivered = in_order + rng.sample(in_order, 3)
        rng.shuffle(delivered)
        got = run_all([make_rule()], delivered)
        assert got.violations == expected.violations
        assert got.duplicates == 3
