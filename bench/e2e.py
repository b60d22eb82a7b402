"""End-to-end benchmark of the embedded stack: MQTT publish -> ingest -> rules -> stored.

Two phases, each with a publisher in its own process (so it does not share the pipeline's GIL):
1. throughput: N events published as fast as the broker and pipeline take them (QoS 1 end to end);
   sustained events/s is stored events over the time from the first to the last stored event;
2. latency: a fixed offered rate (default 5,000 events/s, the bar for one machine) for a few seconds;
   publish-to-stored latency p50/p90/p99/max (wall clock, same machine), and per second of publishing the
   slowest event, so a periodic stall shows as the seconds it hit.
The interpreter runs with `citywatch up`'s settings (citywatch/interpreter_tuning.py), so the runtime is
measured as the command runs it. Prints a Markdown table with the machine it ran on; results also go to
bench/results/e2e-<broker>-<workload>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from citywatch.interpreter_tuning import tune_for_streaming
from citywatch.runtime import EmbeddedRuntime
from core.models import Event
from core.settings import DeviceSettings, Settings


class StoredClock:
    """Collects, per stored event, the latency since its publisher stamped it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies_ms: list[float] = []
        self.first_ns: int | None = None
        self.last_ns: int | None = None

    def __call__(self, events: Sequence[Event]) -> None:
        now_ns = time.time_ns()
        sent_ns = [e.attributes["sent_ns"] for e in events if "sent_ns" in e.attributes]
        with self.lock:
            if self.first_ns is None:
                self.first_ns = now_ns
            self.last_ns = now_ns
            self._record(now_ns, sent_ns)

    def _record(self, now_ns: int, sent_ns: list[int]) -> None:
        self.latencies_ms.extend((now_ns - sent) / 1e6 for sent in sent_ns)

    def reset(self) -> None:
        with self.lock:
            self.latencies_ms, self.first_ns, self.last_ns = [], None, None

    def wait_for(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.latencies_ms) >= count:
                    return True
            time.sleep(0.05)
        return False


class TimedStoredClock(StoredClock):
    """A StoredClock that also keeps each stored event's send time, to tell when the late ones were sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent_ns: list[int] = []

    def _record(self, now_ns: int, sent_ns: list[int]) -> None:
        super()._record(now_ns, sent_ns)
        self.sent_ns.extend(sent_ns)

    def reset(self) -> None:
        with self.lock:
            self.sent_ns = []
        super().reset()


def slowest_by_second(sent_ns: Sequence[int], latencies_ms: Sequence[float]) -> list[float]:
    """The largest publish-to-stored latency among the events sent in each second of the run, in ms."""
    sent = np.asarray(sent_ns, dtype=np.int64)
    latencies = np.asarray(latencies_ms)
    if not len(sent):
        return []
    second = (sent - sent.min()) // 1_000_000_000
    slowest = np.zeros(int(second.max()) + 1)
    np.maximum.at(slowest, second, latencies)
    return [round(float(ms), 1) for ms in slowest]


def wait_until_judged(runtime: EmbeddedRuntime, timeout_s: float) -> None:
    """Waits until the engine holds no event back (every event published so far has been judged)."""
    deadline = time.monotonic() + timeout_s
    while runtime.engine.held and time.monotonic() < deadline:
        time.sleep(0.05)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def publisher_command(url: str, events: int, rate: float, client_id: str, workload: str = "filling",
                      first: int = 0) -> list[str]:
    """bench/publisher.py's command. At a fixed rate its readings are sent by Mosquitto's C client where it
    is installed: paho's publishing took most of a core of the two the pipeline runs on (BENCHMARKS.md,
    "The load generator's share of the machine")."""
    client = "c" if rate and shutil.which("mosquitto_pub") else "paho"
    return [sys.executable, "-m", "bench.publisher", "--url", url, "--events", str(events),
            "--rate", str(rate), "--client-id", client_id, "--workload", workload, "--first", str(first),
            "--client", client]


def publish(url: str, events: int, rate: float, client_id: str,
            workload: str = "filling", first: int = 0) -> dict[str, float]:
    command = publisher_command(url, events, rate, client_id, workload, first)
    result = subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    published: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return published


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events in the throughput phase")
    parser.add_argument("--rate", type=float, default=5000, help="offered events/s in the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=10)
    parser.add_argument("--broker", default="auto", choices=["auto", "mosquitto", "amqtt"])
    parser.add_argument("--only-rule", default=None,
                        help="run with only this rule enabled (e.g. bin_overflow, the skeleton's rule)")
    parser.add_argument("--workload", default="filling", choices=["filling", "churn"],
                        help="filling: bins fill and are emptied (realistic); churn: random fill levels")
    parser.add_argument("--ingest-in-process", action="store_true",
                        help="ingest on the rules' interpreter (bus.ingest_process false), for comparison")
    args = parser.parse_args()
    # As `citywatch up` runs (cli._serve): the collector's thresholds and the GIL's switch interval decide
    # how long the pipeline's threads wait for each other.
    tune_for_streaming()

    devices = [DeviceSettings(device_id=f"bench-{i:05d}", kind="bin") for i in range(1000)]
    clock = TimedStoredClock()
    with tempfile.TemporaryDirectory(prefix="citywatch-bench-") as data_dir:
        settings = Settings(devices=devices).with_overrides(
            store__data_dir=data_dir, mqtt__embedded_broker=args.broker, mqtt__embedded_port=0,
            bus__ingest_process=not args.ingest_in_process)
        if args.only_rule is not None:
            rules = settings.rules.model_dump()
            for name, rule in rules.items():
                if isinstance(rule, dict) and "enabled" in rule:
                    rule["enabled"] = name == args.only_rule
            settings = settings.with_overrides(rules=rules)
        runtime = EmbeddedRuntime(settings, on_stored=clock)
        runtime.start()
        try:
            assert runtime.mqtt_url is not None and runtime.broker is not None
            broker = runtime.broker.kind_used
            print(f"machine: {machine()}; embedded broker: {broker}", flush=True)

            sent = publish(runtime.mqtt_url, args.events, 0, "bench-throughput", args.workload)
            if not clock.wait_for(args.events, 300):
                print(f"only {len(clock.latencies_ms)} of {args.events} events were stored", file=sys.stderr)
                return 1
            assert clock.first_ns is not None and clock.last_ns is not None
            throughput = args.events / max(1e-9, (clock.last_ns - clock.first_ns) / 1e9)
            publish_rate = args.events / sent["elapsed_s"]

            # The engine holds each event for the allowed lateness before its rules judge it: the last
            # seconds of the throughput phase (~10,000 events) are judged all at once when that time is
            # up. Measured from there, the latency phase's first second would be that backlog, not 5,000
            # events/s.
            wait_until_judged(runtime, 60)
            clock.reset()
            offered = int(args.rate * args.latency_seconds)
            # The readings go on from the throughput phase's: starting over would take every bin's fill
            # level back at once (1,000 bins emptied in the same second), which no street does.
            publish(runtime.mqtt_url, offered, args.rate, "bench-latency", args.workload, first=args.events)
            clock.wait_for(offered, 60)
            with clock.lock:
                latencies = np.array(clock.latencies_ms)
                slowest = slowest_by_second(clock.sent_ns, clock.latencies_ms)
            p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
            stored_in_latency_phase = len(latencies)
        finally:
            runtime.stop()

    result = {
        "machine": machine(), "broker": broker, "workload": args.workload, "events": args.events,
        "publish_events_per_s": round(publish_rate), "stored_events_per_s": round(throughput),
        "latency_offered_events_per_s": args.rate, "latency_events": offered,
        "latency_events_stored": stored_in_latency_phase,
        "latency_p50_ms": round(float(p50), 1), "latency_p90_ms": round(float(p90), 1),
        "latency_p99_ms": round(float(p99), 1), "latency_max_ms": round(float(latencies.max()), 1),
        "latency_slowest_ms_by_second": slowest,
    }
    print("\n| broker | workload | events | published/s | stored/s (sustained) | offered/s "
          "| p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {broker} | {args.workload} | {args.events} | {result['publish_events_per_s']} "
          f"| {result['stored_events_per_s']} | {args.rate:.0f} | {result['latency_p50_ms']} "
          f"| {result['latency_p90_ms']} | {result['latency_p99_ms']} | {result['latency_max_ms']} |")
    print(f"\nslowest event by second sent (ms): {', '.join(f'{ms:.0f}' for ms in slowest)}")
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"e2e-{broker}-{args.workload}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
