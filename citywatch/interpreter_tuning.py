"""Interpreter settings for the long-running commands (`up`, `ingest`, `process`, `api`): the garbage
collector's thresholds and the GIL's switch interval.

CPython's cyclic collector runs a young-generation pass every 700 net container allocations, and every
pass also walks whatever survived recently. A pipeline allocates several containers per event (the event,
its attribute and tag dictionaries, rule states, rows for the store) and keeps large long-lived structures
(duplicate-id windows, rule state, the reorder buffer), so at the default thresholds collection took about
a sixth of the rule engine's time (bench feed with the full catalogue: 35.4 -> 29.2 us per event with these
settings; BENCHMARKS.md). Reference counting frees almost all of that garbage anyway: the collector only
exists for cycles, which the pipeline rarely makes, so collecting less often costs little memory.

The pipeline's threads hand the GIL to each other around I/O: the store writer releases it for every
SQLite statement and must take it back from the rule engine's thread, which CPython makes wait for the
switch interval (5 ms) while the engine is busy. At about twenty statements per batch that wait was half
the writer's time; at 0.5 ms it is small, and the engine thread's own speed did not change (a batch
writer beside a busy thread: 33.7 -> 22.5 us per event; alone 18.6).
"""

from __future__ import annotations

import gc
import sys

# Young passes every 50,000 net allocations instead of 700: a few batches of events, a bounded amount.
YOUNG_THRESHOLD = 50_000
# Older generations keep CPython's ratios (a middle pass every 10 young ones, a full one every 10 middle
# ones and only once the survivors grew by a quarter), so cyclic garbage is still bounded.
MIDDLE_THRESHOLD = 10
OLD_THRESHOLD = 10
SWITCH_INTERVAL_S = 0.0005


def tune_for_streaming() -> None:
    """Collect what start-up left, move the survivors (modules, settings) out of the collector's sight,
    collect less often from now on, and let threads waiting for the GIL have it sooner."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
