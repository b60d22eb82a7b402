"""Out-of-order and duplicated delivery, fed to the engine as a live feed would be.

A shuffled-delivery test must be able to fail: the events are handed over as they arrive, a few at a
time, with the engine's wall clock following their arrival (never all at once, where the engine sorts
the whole batch and needs no reorder buffer), each at most `max_shift_s` after its event time (within
the allowed lateness); and the same delivery with the reorder buffer switched off (allowed lateness 0)
must give a different result for at least one of them: otherwise the test shows nothing about ordering.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from core.models import Event
from processors.engine import Engine, EngineOutput
from processors.rule import Rule

LATENESS_MS = 2000
MAX_SHIFT_S = 1.5  # each event arrives up to this much after its event time: within the lateness
BATCH_EVENTS = 3  # handed to the engine at once at most, if they arrived within POLL_MS
POLL_MS = 100


def shuffled_with_duplicates(events: Sequence[Event], seed: int, max_shift_s: float = MAX_SHIFT_S,
                             duplicates: int | None = None) -> list[tuple[int, Event]]:
    """(arrival ms, event) in arrival order: the events each up to `max_shift_s` late, so out of order,
    and `duplicates` of them (default a quarter) delivered twice."""
    rng = random.Random(seed)
    count = max(1, len(events) // 4) if duplicates is None else duplicates
    delivered = list(events) + rng.sample(list(events), count)
    arrivals = [(event.event_time_ms + int(rng.uniform(0, max_shift_s * 1000)), event) for event in delivered]
    return sorted(arrivals, key=lambda pair: pair[0])


def fed_as_delivered(rules: Sequence[Rule[Any]], delivered: Sequence[tuple[int, Event]],
                     lateness_ms: int = LATENESS_MS) -> EngineOutput:
    """The delivery fed in arrival order as a live processor polls it: up to `BATCH_EVENTS` events that
    arrived within `POLL_MS` of each other at a time, at the newest one's arrival as the engine's wall
    clock; then drained (the end of the feed)."""
    batches: list[list[tuple[int, Event]]] = []
    for arrival_ms, event in delivered:
        batch = batches[-1] if batches else None
        if batch is not None and len(batch) < BATCH_EVENTS and arrival_ms - batch[0][0] <= POLL_MS:
            batch.append((arrival_ms, event))
        else:
            batches.append([(arrival_ms, event)])
    engine = Engine(rules, allowed_lateness_ms=lateness_ms)
    out = EngineOutput()
    for batch in batches:
        out.extend(engine.process([event for _, event in batch], now_wall_ms=batch[-1][0]))
    out.extend(engine.drain())
    return out


def assert_same_regardless_of_delivery(make_rules: Callable[[], Sequence[Rule[Any]]],
                                       in_order: Sequence[Event], expected: EngineOutput,
                                       seeds: int = 10) -> None:
    """Every shuffled and duplicated delivery gives the in-order violations, with no event late and every
    duplicate dropped; and without the reorder buffer at least one of them does not."""
    spoiled: list[EngineOutput] = []
    for seed in range(seeds):
        delivered = shuffled_with_duplicates(in_order, seed)
        got = fed_as_delivered(make_rules(), delivered)
        assert got.violations == expected.violations, f"delivery with seed {seed} differs"
        assert got.late_events == [], f"delivery with seed {seed} had late events"
        assert got.duplicates == len(delivered) - len(in_order)
        spoiled.append(fed_as_delivered(make_rules(), delivered, lateness_ms=0))
    assert any(out.violations != expected.violations for out in spoiled), (
        "the deliveries give the in-order result even without a reorder buffer: they test no ordering")
