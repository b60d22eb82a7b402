"""Soak of the embedded stack: a steady offered rate for a long time, memory and latency sampled as it runs.

`citywatch up`'s runtime (embedded broker: Mosquitto when installed, the full rule catalogue, SQLite)
judges bin readings published at `--rate` events/s by a publisher in its own process, for `--minutes`.
Every `--sample-s` seconds it records the resident memory (RSS) of the process and of its ingest process
(citywatch/ingest_process.py; the embedded broker and the publisher are not counted) and the publish-to-stored
latency of the events stored in that window (p50/p99), so a leak shows as RSS that keeps rising and a
backlog as latency that keeps rising. Prints one Markdown row per window as it goes and a summary;
results also go to bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.e2e import StoredClock, machine, publisher_command
from citywatch.ingest_process import IngestProcess
from citywatch.interpreter_tuning import tune_for_streaming
from citywatch.runtime import EmbeddedRuntime
from core.settings import DeviceSettings, Settings


def rss_mb(pid: int | str = "self") -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0.0  # no such process (the ingest process between a death and its restart)
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def window_row(started: float, clock: StoredClock, stored_total: int,
               ingest_pid: int | None) -> dict[str, Any]:
    with clock.lock:
        latencies = np.array(clock.latencies_ms)
        clock.latencies_ms = []
    p50, p99 = np.percentile(latencies, [50, 99]) if len(latencies) else (float("nan"), float("nan"))
    ingest_mb = 0.0 if ingest_pid is None else rss_mb(ingest_pid)
    return {"minute": round((time.monotonic() - started) / 60, 1), "rss_mb": round(rss_mb() + ingest_mb, 1),
            "ingest_rss_mb": round(ingest_mb, 1),
            "stored": len(latencies), "stored_total": stored_total + len(latencies),
            "p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1)}


def ingest_pid(runtime: EmbeddedRuntime) -> int | None:
    return runtime.ingest.pid if isinstance(runtime.ingest, IngestProcess) else None


def drain(clock: StoredClock, remaining: int, stall_s: float = 60) -> None:
    """Waits for the backlog left when the publisher ends, for as long as it keeps shrinking: a slower
    machine shows it as latency, and only events that stop arriving fail the run."""
    stored_before = -1
    while not clock.wait_for(remaining, stall_s):
        with clock.lock:
            stored = len(clock.latencies_ms)
        if stored == stored_before:
            return
        stored_before = stored


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=3000, help="offered events/s")
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--sample-s", type=float, default=60, help="seconds per sampled window")
    parser.add_argument("--broker", default="auto", choices=["auto", "mosquitto", "amqtt"])
    parser.add_argument("--workload", default="filling", choices=["filling", "churn"],
                        help="filling: bins fill and are emptied (a violation change about every 60 "
                             "readings); churn: random fill levels (one about every 5), which fills the "
                             "windows that hold violation changes in minutes instead of half an hour")
    args = parser.parse_args()

    devices = [DeviceSettings(device_id=f"bench-{i:05d}", kind="bin") for i in range(1000)]
    clock = StoredClock()
    events = int(args.rate * args.minutes * 60)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="citywatch-soak-") as data_dir:
        settings = Settings(devices=devices).with_overrides(
            store__data_dir=data_dir, mqtt__embedded_broker=args.broker, mqtt__embedded_port=0)
        runtime = EmbeddedRuntime(settings, on_stored=clock)
        tune_for_streaming()  # the collector and GIL settings `citywatch up` runs with
        runtime.start()
        try:
            assert runtime.mqtt_url is not None and runtime.broker is not None
            broker = runtime.broker.kind_used
            print(f"machine: {machine()}; embedded broker: {broker}; {args.rate:.0f} events/s for "
                  f"{args.minutes:g} min ({args.workload})", flush=True)
            print("| minute | RSS MB (with ingest's) | ingest process MB | stored in window | p50 ms "
                  "| p99 ms |", flush=True)
            print("|---|---|---|---|---|---|", flush=True)
            publisher = subprocess.Popen(
                publisher_command(runtime.mqtt_url, events, args.rate, "bench-soak", args.workload),
                stdout=subprocess.DEVNULL)
            started = time.monotonic()
            stored_total = 0
            while publisher.poll() is None:
                time.sleep(max(0.0, started + (len(rows) + 1) * args.sample_s - time.monotonic()))
                row = window_row(started, clock, stored_total, ingest_pid(runtime))
                stored_total = row["stored_total"]
                rows.append(row)
                print(f"| {row['minute']} | {row['rss_mb']} | {row['ingest_rss_mb']} | {row['stored']} "
                      f"| {row['p50_ms']} "
                      f"| {row['p99_ms']} |", flush=True)
            drain(clock, events - stored_total)
            rows.append(window_row(started, clock, stored_total, ingest_pid(runtime)))
        finally:
            runtime.stop()

    stored = rows[-1]["stored_total"]
    half = rows[len(rows) // 2]
    late_growth = (rows[-2]["rss_mb"] - half["rss_mb"]) / max(1e-9, rows[-2]["minute"] - half["minute"]) \
        if len(rows) > 2 else float("nan")
    result = {"machine": machine(), "broker": broker, "rate": args.rate, "minutes": args.minutes,
              "workload": args.workload,
              "events": events, "stored": stored, "windows": rows,
              "rss_growth_mb_per_min_second_half": round(late_growth, 2)}
    print(f"\nstored {stored} of {events}; RSS {rows[0]['rss_mb']} MB at the first window, "
          f"{rows[-2]['rss_mb'] if len(rows) > 1 else rows[0]['rss_mb']} MB at the last; "
          f"growth over the second half {late_growth:.2f} MB/min")
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "soak.json").write_text(json.dumps(result, indent=2))
    if stored < events:
        # The embedded Mosquitto queues at most MOSQUITTO_MAX_QUEUED_MESSAGES for a subscriber that is behind.
        print(f"{events - stored} of {events} events were never stored: the pipeline stopped, or fell so far "
              "behind that the broker's queue for it overflowed (see the latency above)", file=sys.stderr)
    return 0 if stored == events else 1


if __name__ == "__main__":
    sys.exit(main())
