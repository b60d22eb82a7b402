"""Every sanitation rule gives the in-order result however its readings are delivered: out of order
within the allowed lateness, fed a few at a time with the wall clock following their arrival, and with
duplicates. A property of the engine and the rules together; without the reorder buffer it fails."""

from __future__ import annotations

import pytest

from tests.support.delivery import assert_same_regardless_of_delivery
from tests.support.rules import run_all
from tests.support.sanitation_scenarios import SCENARIOS


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_shuffled_and_duplicated_delivery_gives_the_in_order_result(name):
    make_rule, in_order = SCENARIOS[name]
    expected = run_all([make_rule()], in_order)
    assert expected.violations, f"scenario {name} must raise something to be a test"
    assert_same_regardless_of_delivery(lambda: [make_rule()], in_order, expected)
