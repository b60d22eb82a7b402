"""Alerts under load: 1,000 webhook subscriptions and 500 SSE clients while the pipeline runs at its
benchmark rate (5,000 events/s of bin readings from 1,000 devices in 100 grids).

Each subscription and each stream client filters one grid (10 subscriptions and 5 clients per grid), so
every violation change fans out to 10 webhook deliveries and 5 stream messages. Webhook receivers are
real HTTP servers (4 ports, in their own process), stream clients real SSE connections (in another
process); the pipeline and the API run here, as `citywatch up` runs them. Latency is measured from the
moment the change is published to the feed (right after the store made it durable) to its arrival at
the receiver or client, on the same wall clock. What the alerts cost the pipeline shows in the events it
stored per second during the run (first to last stored event) and its publish-to-stored latency: compare a
run with `--subscriptions 0 --stream-clients 0`. Results also go to bench/results/alerts.json.

    .venv/bin/python -m bench.alerts [--subscriptions 1000] [--stream-clients 500] [--rate 5000] [--type T]
                                     [--changes-per-post N]

`--changes-per-post N` subscribes with `max_changes_per_post: N` (default 1: one change a POST); the
webhook figures then count each change a POST carried, with its own latency.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn

from api.alerts.filters import ViolationFilter
from api.alerts.webhooks.store import DeliveryStatus
from api.app import create_app
from bench.e2e import StoredClock, machine, publish
from citywatch.runtime import EmbeddedRuntime
from core.settings import DeviceSettings, Settings
from ingest.embedded_broker import free_port


def start_clients(*args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-m", "bench.alert_clients", *args], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != "ready":
        raise RuntimeError(f"bench client did not start: {line!r}")
    return process


def finish(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate("", timeout=60)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def percentiles(values: list[int] | list[float]) -> tuple[float, float, float]:
    if not values:
        return (float("nan"),) * 3  # type: ignore[return-value]
    p50, p99, top = np.percentile(np.array(values), [50, 99, 100])
    return round(float(p50), 1), round(float(p99), 1), round(float(top), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--stream-clients", type=int, default=500)
    parser.add_argument("--rate", type=float, default=5000, help="offered events/s")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--grids", type=int, default=100)
    parser.add_argument("--receivers", type=int, default=4, help="receiver HTTP servers (ports)")
    parser.add_argument("--type", default=None,
                        help="subscriptions and stream clients also filter on this violation type")
    parser.add_argument("--changes-per-post", type=int, default=1,
                        help="the subscriptions' max_changes_per_post")
    args = parser.parse_args()

    devices = [DeviceSettings(device_id=f"bench-{i:05d}", kind="bin",
                              tags={"grid": f"G-{i % args.grids:03d}"}) for i in range(1000)]
    api_port = free_port()
    receiver_ports = [free_port() for _ in range(args.receivers)]
    receivers = start_clients("receivers", "--ports", ",".join(map(str, receiver_ports)))
    with tempfile.TemporaryDirectory(prefix="citywatch-bench-alerts-") as data_dir:
        settings = Settings(devices=devices).with_overrides(
            store__data_dir=data_dir, mqtt__embedded_port=0, api__port=api_port, api__auth="disabled",
            alerts__stream_max_lag=100_000,
            alerts__webhooks__allowed_private_networks=["127.0.0.0/8"])  # the receivers are local
        clock = StoredClock()
        runtime = EmbeddedRuntime(settings, on_stored=clock)
        server = uvicorn.Server(uvicorn.Config(create_app(runtime.api_services()), host="127.0.0.1",
                                               port=api_port, log_level="warning", ws="websockets-sansio"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            dispatcher = runtime.alerts.webhooks
            for n in range(args.subscriptions):
                port = receiver_ports[n % len(receiver_ports)]
                dispatcher.create(url=f"http://127.0.0.1:{port}/hook/{n}", description="bench",
                                  filter=ViolationFilter(grid=(f"G-{n % args.grids:03d}",),
                                                         type=(args.type,) if args.type else ()),
                                  secret=None, owner_key_id="bench", plates=False,
                                  max_changes_per_post=args.changes_per_post)
            streams = start_clients("streams", "--port", str(api_port), "--clients", str(args.stream_clients),
                                    "--grids", str(args.grids), *(["--type", args.type] if args.type else []))
            assert runtime.mqtt_url is not None
            print(f"machine: {machine()}; {args.subscriptions} subscriptions, {args.stream_clients} stream "
                  f"clients; publishing {args.rate:.0f} events/s for {args.seconds:.0f} s", flush=True)
            offered = int(args.rate * args.seconds)
            started = time.monotonic()
            sent = publish(runtime.mqtt_url, offered, args.rate, "bench-alerts")
            publish_s = time.monotonic() - started
            clock.wait_for(offered, 60)
            with clock.lock:
                stored = len(clock.latencies_ms)
                stored_s = (clock.last_ns - clock.first_ns) / 1e9 if clock.first_ns and clock.last_ns else 0.0
                stored_p50, stored_p99, _ = percentiles(clock.latencies_ms)
            # Let deliveries drain (bounded wait), then count what the dispatcher recorded. The receivers
            # stop before the pipeline does: the changes its shutdown drain emits are not steady state.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and dispatcher.store.count(DeliveryStatus.PENDING):
                time.sleep(0.5)
            changes = runtime.alerts.feed.last_seq
            by_type = Counter(entry.violation.type for entry in runtime.alerts.feed.read_after(
                runtime.alerts.feed.oldest_seq - 1, changes))
            webhook_result = finish(receivers)
            statuses = {status: dispatcher.store.count(status) for status in DeliveryStatus}
            stream_result = finish(streams)
        finally:
            server.should_exit = True
            thread.join(30)
            if receivers.returncode is None:
                receivers.kill()

    hook_p50, hook_p99, hook_max = percentiles(webhook_result["latencies_ms"])
    stream_p50, stream_p99, stream_max = percentiles(stream_result["latencies_ms"])
    result = {
        "machine": machine(), "subscriptions": args.subscriptions, "stream_clients": args.stream_clients,
        "offered_events_per_s": args.rate, "events": offered, "publish_s": round(publish_s, 1),
        "published_events_per_s": round(offered / sent["elapsed_s"]),
        "stored_events": stored, "stored_events_per_s": round(stored / stored_s) if stored_s else 0,
        "stored_latency_p50_ms": stored_p50, "stored_latency_p99_ms": stored_p99,
        "violation_changes": changes, "changes_by_type": dict(by_type), "type_filter": args.type,
        "changes_per_post": args.changes_per_post,
        "webhook_deliveries": webhook_result["messages"], "webhook_unique": webhook_result["unique"],
        "deliveries_by_status": {s.value: n for s, n in statuses.items()},
        "webhook_latency_p50_ms": hook_p50, "webhook_latency_p99_ms": hook_p99,
        "webhook_latency_max_ms": hook_max,
        "stream_messages": stream_result["messages"], "stream_errors": stream_result["errors"],
        "stream_latency_p50_ms": stream_p50, "stream_latency_p99_ms": stream_p99,
        "stream_latency_max_ms": stream_max,
    }
    print("\n| subscriptions | stream clients | events/s | stored/s | stored p50 / p99 ms | changes "
          "| webhook deliveries | webhook p50 / p99 ms | stream messages | stream p50 / p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.subscriptions} | {args.stream_clients} | {result['published_events_per_s']} "
          f"| {result['stored_events_per_s']} | {stored_p50} / {stored_p99} | {changes} "
          f"| {result['webhook_deliveries']} ({statuses[DeliveryStatus.DEAD]} dead) "
          f"| {hook_p50} / {hook_p99} "
          f"| {result['stream_messages']} | {stream_p50} / {stream_p99} |")
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "alerts.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
