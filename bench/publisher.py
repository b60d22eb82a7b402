"""Publishes native bin readings over MQTT as fast as allowed (or at a fixed rate), in its own process.

Each payload carries `sent_ns` (wall clock) so the pipeline side can measure publish-to-stored latency.
Run by bench/e2e.py; prints one JSON line with what it published.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from citywatch.mqtt_publisher import MqttPublisher

OVERFLOW_CYCLE = (95.0, 97.0, 5.0, 12.0, 21.0, 33.0, 45.0, 58.0, 70.0, 82.0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = as fast as the broker takes")
    parser.add_argument("--qos", type=int, default=1)
    parser.add_argument("--client-id", default="citywatch-bench-publisher")
    parser.add_argument("--workload", choices=["filling", "churn", "overflow"], default="filling",
                        help="filling: bins fill and are emptied; churn: random fill, constant state "
                        "changes; overflow: every bin overflows and is emptied every tenth reading")
    args = parser.parse_args()

    rng = random.Random(1)
    publisher = MqttPublisher(args.url, args.client_id, qos=args.qos).connect()
    started = time.perf_counter()
    last_info = None
    for i in range(args.events):
        if args.rate:
            ahead_s = i / args.rate - (time.perf_counter() - started)
            if ahead_s > 0:
                time.sleep(ahead_s)
        device_id = f"bench-{i % args.devices:05d}"
        now_ns = time.time_ns()
        if args.workload == "churn":
            fill = round(rng.uniform(0, 100), 1)  # every reading a jump: violations open and clear constantly
        elif args.workload == "overflow":
            # 95, 97 (two in a row: an overflow opens), 5 (emptied: it clears), then filling again: two
            # violation changes every ten readings, 1,000 changes/s at 5,000 readings/s (bench/cases.py).
            fill = OVERFLOW_CYCLE[(i // args.devices) % len(OVERFLOW_CYCLE)]
        else:
            # Bins fill 0.5% a reading from a staggered start and are emptied at 100%, as real bins do:
            # each bin opens and clears an overflow every ~200 readings.
            fill = ((i // args.devices + (i % args.devices) * 37) * 0.5) % 100.5
        body = {"device_id": device_id, "kind": "bin", "time": now_ns // 1_000_000,
                "attributes": {"fill_pct": round(min(fill, 100.0), 1), "sent_ns": now_ns, "seq": i}}
        last_info = publisher.publish(f"citywatch/events/{device_id}", json.dumps(body).encode())
    if last_info is not None:
        last_info.wait_for_publish(60)
    elapsed_s = time.perf_counter() - started
    publisher.close()
    print(json.dumps({"published": args.events, "elapsed_s": elapsed_s}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
