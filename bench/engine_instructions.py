"""Instructions per event through the rule engine, counted by valgrind: a cost other tenants cannot move.

On a shared machine the time a run takes moves by a factor of two or three from one hour to the next
(BENCHMARKS.md keeps such days apart), so a change of 5-10% in the rule engine's cost cannot be told
from noise by timing it. Instructions executed can: `valgrind --tool=callgrind` counts them whatever else
the machine runs, and with a fixed hash seed runs of the same code agree to within about 1.5% (measured:
175,589 and 177,832 instructions per event for the same tree, and four runs of one size within 0.04%
of each other). It is slow (about 50 times the normal run), so the feed is short.

Per workload (the Kafka benchmark's bin feeds, `bench.kafka.bench_event`), the engine with the project's
rules judges N and then 3N events in two runs under callgrind; instructions per event is the difference
over 2N, which leaves out the interpreter's start, the imports and building the feed. It counts
instructions, not time: a change that trades instructions for cache misses or allocations is not seen,
so a saving found here is confirmed by timing (`bench.kafka --engine-only`) on a quiet day.

    .venv/bin/python -m bench.engine_instructions              # churn and filling, 5,000 events
    .venv/bin/python -m bench.engine_instructions --events 2000 --workload churn

Needs valgrind (`apt install valgrind`); results also go to bench/results/engine-instructions.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.kafka import WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results" / "engine-instructions.json"
BATCH = 5000


def judge(events: int, workload: str) -> None:
    """The measured program: the feed judged in batches of BATCH, as the processors do."""
    import gc

    from bench.kafka import bench_event
    from core.settings import Settings
    from processors.catalogue import build_rules
    from processors.devices import NoDevices
    from processors.engine import Engine

    feed = [bench_event(i, workload=workload) for i in range(events)]
    settings = Settings()
    engine = Engine(build_rules(settings.rules, NoDevices()),
                    allowed_lateness_ms=settings.pipeline.allowed_lateness_ms)
    gc.disable()  # when the collector runs depends on allocations before the feed: not the engine's cost
    for start in range(0, events, BATCH):
        engine.process(feed[start:start + BATCH], feed[-1].event_time_ms)


def instructions(events: int, workload: str) -> int:
    """Instructions the whole program executed, judging `events` events."""
    with tempfile.TemporaryDirectory(prefix="citywatch-callgrind-") as tmp:
        completed = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.out",
             sys.executable, "-m", "bench.engine_instructions", "--judge", str(events),
             "--workload", workload],
            env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, check=False,
            cwd=Path(__file__).resolve().parents[1])
        found = re.search(r"Collected : (\d+)", completed.stderr)
        if completed.returncode != 0 or found is None:
            raise SystemExit(f"the run under valgrind failed ({completed.returncode}):\n"
                             f"{completed.stderr[-2000:]}")
        return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000, help="N: the runs judge N and 3N events")
    parser.add_argument("--workload", choices=WORKLOADS, help="one workload (default: each)")
    parser.add_argument("--judge", type=int, help=argparse.SUPPRESS)  # the program run under valgrind
    args = parser.parse_args()
    if args.judge is not None:
        judge(args.judge, args.workload or "churn")
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt install valgrind", file=sys.stderr)
        return 2
    results = {}
    for workload in [args.workload] if args.workload else list(WORKLOADS):
        difference = instructions(3 * args.events, workload) - instructions(args.events, workload)
        per_event = difference / (2 * args.events)
        results[workload] = round(per_event)
        print(f"engine, {workload}: {per_event:,.0f} instructions per event "
              f"(valgrind callgrind, {args.events:,} and {3 * args.events:,} events)", flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    summary = {"events": args.events, "instructions_per_event": results}
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
