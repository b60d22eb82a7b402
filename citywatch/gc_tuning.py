"""Garbage-collector settings for the long-running commands (`up`, `ingest`, `process`, `api`).

CPython's cyclic collector runs a young-generation pass every 700 net container allocations, and every
pass also walks whatever survived recently. A pipeline allocates several containers per event (the event,
its attribute and tag dictionaries, rule states, rows for the store) and keeps large long-lived structures
(duplicate-id windows, rule state, the reorder buffer), so at the default thresholds collection took about
a sixth of the rule engine's time (bench feed with the full catalogue: 35.4 -> 29.2 us per event with these
settings; BENCHMARKS.md). Reference counting frees almost all of that garbage anyway: the collector only
exists for cycles, which the pipeline rarely makes, so collecting less often costs little memory.
"""

from __future__ import annotations

import gc

# Young passes every 50,000 net allocations instead of 700: a few batches of events, a bounded amount.
YOUNG_THRESHOLD = 50_000
# Older generations keep CPython's ratios (a middle pass every 10 young ones, a full one every 10 middle
# ones and only once the survivors grew by a quarter), so cyclic garbage is still bounded.
MIDDLE_THRESHOLD = 10
OLD_THRESHOLD = 10


def tune_for_streaming() -> None:
    """Collect what start-up left, move the survivors (modules, settings) out of the collector's sight,
    and collect less often from now on."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
