"""CPU per reading of the bin-near-full forecast (processors/rules/bin_near_full.py) alone, and a digest of
everything it emitted, so that a change to the fit can show it is faster and changes no result.

Feeds (1,000 bins filling 0.5 points a reading, emptied at 100%, as bench/publisher.py's `filling`):
- `steady`: readings evenly spaced in time, about 5,000 a second: the line fits, the outlier search is
  skipped (its bound from the running sums rules every reading out);
- `jitter`: the same, each time stamp moved up to 0.4 s either way;
- `phases`: half the readings at 8,000 a second, a 3 s pause, the rest at 5,000 a second (bench/e2e.py's
  throughput then latency phases): the fill rate per second changes, the line bends, and about a fifth of
  the readings need the per-reading outlier search.

    .venv/bin/python -m bench.near_full --feed phases --events 200000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from typing import Any

import msgspec

from core.models import Event, Prediction, Violation
from core.sanitation_settings import BinNearFullSettings
from processors.rules import bin_near_full
from processors.rules.bin_near_full import BinNearFullRule, NearFullState

T0_MS = 1_764_000_000_000


def readings(feed: str, count: int, bins: int = 1000) -> list[Event]:
    rng = random.Random(1)
    events, last_ms = [], {}
    now_ms = T0_MS
    for i in range(count):
        if feed == "phases":
            half = count // 2
            now_ms = T0_MS + (i * 125 // 1000 if i < half else half * 125 // 1000 + 3000 + (i - half) // 5)
        else:
            now_ms += rng.choice([0, 0, 0, 1])
        stamp_ms = now_ms + (rng.randint(-400, 400) if feed == "jitter" else 0)
        device = i % bins
        stamp_ms = last_ms[device] = max(stamp_ms, last_ms.get(device, 0))  # in order per bin
        fill = ((i // bins + device * 37) * 0.5) % 100.5
        events.append(Event(event_id=f"e{i}", device_id=f"bin-{device:05d}", kind="bin",
                            event_time_ms=stamp_ms, ingest_time_ms=now_ms,
                            attributes={"fill_pct": round(min(fill, 100.0), 1)}))
    return events


class Collected:
    def __init__(self) -> None:
        self.records: list[Prediction] = []
        self.violations: list[Violation] = []

    def record(self, record: Prediction) -> None:
        self.records.append(record)

    def violation(self, violation: Violation) -> None:
        self.violations.append(violation)


def measure(feed: str, count: int) -> dict[str, Any]:
    events = readings(feed, count)
    searches = 0
    may_have_outlier = bin_near_full._may_have_outlier

    def counted(*args: Any) -> bool:
        nonlocal searches
        found = may_have_outlier(*args)
        searches += found
        return found

    rule = BinNearFullRule(BinNearFullSettings())
    states: dict[str, NearFullState | None] = {}
    out = Collected()
    started = time.process_time()
    for event in events:
        states[event.device_id] = rule.on_event(states.get(event.device_id), event, out)  # type: ignore[arg-type]
    cpu_s = time.process_time() - started
    # Counted in a second pass, so that the timed one runs the rule as the engine does.
    bin_near_full._may_have_outlier = counted
    try:
        states = {}
        for event in events:
            states[event.device_id] = rule.on_event(states.get(event.device_id), event, Collected())  # type: ignore[arg-type]
    finally:
        bin_near_full._may_have_outlier = may_have_outlier
    digest = hashlib.sha256(msgspec.json.encode([out.records, out.violations])).hexdigest()[:16]
    return {"feed": feed, "readings": count, "us_per_reading": round(cpu_s * 1e6 / count, 1),
            "outlier_searches": searches, "violations": len(out.violations), "digest": digest}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feed", choices=["steady", "jitter", "phases", "all"], default="all")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per feed; the best is printed")
    args = parser.parse_args()
    for feed in (["steady", "jitter", "phases"] if args.feed == "all" else [args.feed]):
        runs = [measure(feed, args.events) for _ in range(args.repeats)]
        best = min(runs, key=lambda run: run["us_per_reading"])
        print(json.dumps(best), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
