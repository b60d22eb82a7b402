"""Interpreter settings for the long-running commands (`up`, `ingest`, `process`, `api`): the garbage
collector's thresholds, the GIL's switch interval and where glibc's allocator puts large blocks.

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

glibc maps a block of at least its mmap threshold (128 KiB at first) on its own and unmaps it when freed,
but raises the threshold to the size of every such block freed, up to 32 MiB. The pipeline keeps tables of
that size that are rebuilt from time to time (the duplicate window's, the feed's replay check's, large
rule-state dictionaries): once one has been freed, the next is carved from the heap, where the small
allocations that fill the hole it leaves keep it from being reused whole, and the heap grows by a table's
size every few rebuilds. The process grew in 10-15 MB steps for as long as it ran, also once every bounded
window was full (BENCHMARKS.md). A fixed threshold keeps large blocks mapped on their own and returned when
freed, and the steps are gone.
"""

from __future__ import annotations

import ctypes
import gc
import platform
import sys

# Young passes every 50,000 net allocations instead of 700: a few batches of events, a bounded amount.
YOUNG_THRESHOLD = 50_000
# Older generations keep CPython's ratios (a middle pass every 10 young ones, a full one every 10 middle
# ones and only once the survivors grew by a quarter), so cyclic garbage is still bounded.
MIDDLE_THRESHOLD = 10
OLD_THRESHOLD = 10
SWITCH_INTERVAL_S = 0.0005
# Blocks of 1 MiB and more mapped on their own: the rebuilt tables, never the many small objects.
MMAP_THRESHOLD_BYTES = 1 << 20
M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def tune_for_streaming() -> None:
    """Collect what start-up left, move the survivors (modules, settings) out of the collector's sight,
    collect less often from now on, let threads waiting for the GIL have it sooner, and keep large blocks
    out of glibc's heap."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    fix_mmap_threshold()


def fix_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold (which also stops it from moving); False where the C library is not glibc
    (musl maps large blocks on their own anyway)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
