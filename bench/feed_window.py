"""The violation feed's resume window: the memory it holds when full, and what publishing and resuming cost.

Publishes `--changes` violation changes shaped like the near-full forecasts of the soak's bin readings
(four or five evidence event ids, the forecast's details) into a feed whose window holds all of them, in
batches of 50 (the processor publishes what each store flush made durable), with the alert settings'
default stream lag limit (the newest changes kept as objects). Reports the memory the feed
holds once full (tracemalloc: Python's allocations only, the way the process's RSS grows with them), the
time to publish per change, and the time for a client to resume from the oldest change held, reading the
whole window 500 changes at a time as a stream does, and how long a full pass of Python's cyclic garbage
collector takes in this process while the feed holds its window (the collector visits every object the
window keeps; the pipeline's process stalls for that long when a full pass runs).

    .venv/bin/python -m bench.feed_window    # a Markdown row; results in bench/results/feed_window.json
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
import tracemalloc
from pathlib import Path

from api.alerts.streams import READ_BATCH  # what a stream client reads at a time
from bench.e2e import machine
from core.models import Evidence, Severity, Violation, ViolationStatus
from core.settings import AlertSettings
from processors.outputs.feed import ViolationFeed

BATCH = 50
HOT = AlertSettings().stream_max_lag
RESULTS = Path(__file__).resolve().parent / "results" / "feed_window.json"


def near_full_changes(count: int, seed: int = 7) -> list[Violation]:
    rng = random.Random(seed)
    start = 1_796_611_621_235
    changes = []
    for n in range(count):
        points = rng.choice((4, 5))
        opened = start + n * 20
        status = ViolationStatus.OPEN if n % 2 == 0 else ViolationStatus.CLEARED
        changes.append(Violation(
            violation_id=rng.randbytes(16).hex(), type="bin_near_full", severity=Severity.MEDIUM,
            device_id=f"bench-{rng.randrange(1000):05d}", start_time_ms=opened, status=status,
            end_time_ms=None if status is ViolationStatus.OPEN else opened + 47_000,
            evidence=Evidence(event_ids=[rng.randbytes(16).hex() for _ in range(points)], details={
                "slope_pct_per_h": round(rng.uniform(1000, 12000), 3), "points": points,
                "dropped_outlier_event_id": None, "horizon_s": 7200.0,
                "predicted_full_ms": opened + rng.randrange(60_000),
                "fill_pct": [round(0.5 * i, 1) for i in range(points)]}),
            updated_time_ms=opened, detected_time_ms=opened))
    return changes


def publish(feed: ViolationFeed, changes: list[Violation]) -> None:
    for i in range(0, len(changes), BATCH):
        feed.publish(changes[i:i + BATCH])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=100_000,
                        help="changes published; the window holds them all (alerts.feed_retention's default)")
    args = parser.parse_args()

    changes = near_full_changes(args.changes)
    feed = ViolationFeed(args.changes, hot=HOT)
    started = time.perf_counter()
    publish(feed, changes)
    publish_s = time.perf_counter() - started

    # Again into a new feed, traced (tracemalloc slows Python down, so the time above is untraced); the
    # changes made while traced, as the processor makes them, and let go once published.
    del changes, feed
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    traced = ViolationFeed(args.changes, hot=HOT)
    changes = near_full_changes(args.changes)
    publish(traced, changes)
    del changes  # what stays traced is what the feed holds
    held_mb = (tracemalloc.get_traced_memory()[0] - before) / 2**20
    tracemalloc.stop()
    feed = traced

    pauses_ms = []
    for _ in range(5):
        started = time.perf_counter()
        gc.collect()
        pauses_ms.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    seq, read = feed.oldest_seq - 1, 0
    while entries := feed.read_after(seq, READ_BATCH):
        seq, read = entries[-1].seq, read + len(entries)
    resume_s = time.perf_counter() - started
    assert read == args.changes, read

    result = {"machine": machine(), "changes": args.changes, "held_mb": round(held_mb, 1),
              "bytes_per_change": round(held_mb * 2**20 / args.changes),
              "publish_us_per_change": round(publish_s / args.changes * 1e6, 2),
              "resume_whole_window_s": round(resume_s, 3),
              "full_collection_ms": round(statistics.median(pauses_ms), 1)}
    print(f"machine: {result['machine']}")
    print("| changes held | memory held MB | bytes a change | publish us/change "
          "| resume the whole window s | full collection ms |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.changes:,} | {result['held_mb']} | {result['bytes_per_change']} "
          f"| {result['publish_us_per_change']} | {result['resume_whole_window_s']} "
          f"| {result['full_collection_ms']} |")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
