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
from collections import deque

import paho.mqtt.client as mqtt

from citywatch.mqtt_publisher import MqttPublisher

OVERFLOW_CYCLE = (95.0, 97.0, 5.0, 12.0, 21.0, 33.0, 45.0, 58.0, 70.0, 82.0)
# QoS 1 publishes accepted by paho and not acknowledged yet, at most. paho gives each one a 16-bit packet id
# as it is queued (not as it is sent), so past 65,535 outstanding publishes the ids collide and paho
# refuses the new ones with MQTT_ERR_QUEUE_SIZE, which a publisher that does not check loses silently.
ACK_WINDOW = 10_000


class WindowedPublisher:
    """Publishes through `publisher` with at most `window` QoS 1 messages unacknowledged: when the window
    is full, waits for the oldest PUBACK before queueing the next message (backpressure, not loss).

    Every publish's return code is checked, so a message paho refused fails the run instead of being
    silently missing from it.
    """

    def __init__(self, publisher: MqttPublisher, window: int = ACK_WINDOW, timeout_s: float = 60.0) -> None:
        if not 0 < window < 65_536:
            raise ValueError(f"the ack window must be 1-65,535 publishes (paho's packet ids), got {window}")
        self.window = window
        self._publisher = publisher
        self._timeout_s = timeout_s
        self._pending: deque[mqtt.MQTTMessageInfo] = deque()
        self.most_outstanding = 0

    @property
    def outstanding(self) -> int:
        """Publishes handed to paho and not acknowledged as far as this publisher has waited."""
        return len(self._pending)

    def publish(self, topic: str, payload: bytes) -> None:
        while len(self._pending) >= self.window:
            self._wait_for_oldest()
        info = self._publisher.publish(topic, payload)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"the MQTT client refused publish {info.mid}: {mqtt.error_string(info.rc)}")
        if self._publisher.qos > 0:
            self._pending.append(info)
            self.most_outstanding = max(self.most_outstanding, len(self._pending))

    def drain(self) -> None:
        """Waits until every message published so far is acknowledged."""
        while self._pending:
            self._wait_for_oldest()

    def _wait_for_oldest(self) -> None:
        oldest = self._pending[0]
        oldest.wait_for_publish(self._timeout_s)
        if not oldest.is_published():
            raise TimeoutError(f"publish {oldest.mid} not acknowledged within {self._timeout_s:.0f} s")
        self._pending.popleft()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--first", type=int, default=0,
                        help="number of the first reading: a later run goes on with the bins' fill levels "
                        "instead of taking them all back to the start at once")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = as fast as the broker takes")
    parser.add_argument("--qos", type=int, default=1)
    parser.add_argument("--client-id", default="citywatch-bench-publisher")
    parser.add_argument("--workload", choices=["filling", "churn", "overflow"], default="filling",
                        help="filling: bins fill and are emptied; churn: random fill, constant state "
                        "changes; overflow: every bin overflows and is emptied every tenth reading")
    parser.add_argument("--window", type=int, default=ACK_WINDOW,
                        help="QoS 1 publishes outstanding at most (paho's packet ids allow 65,535)")
    args = parser.parse_args()

    rng = random.Random(1)
    publisher = MqttPublisher(args.url, args.client_id, qos=args.qos).connect()
    windowed = WindowedPublisher(publisher, args.window)
    started = time.perf_counter()
    for n, i in enumerate(range(args.first, args.first + args.events)):
        if args.rate:
            ahead_s = n / args.rate - (time.perf_counter() - started)
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
        windowed.publish(f"citywatch/events/{device_id}", json.dumps(body).encode())
    windowed.drain()
    elapsed_s = time.perf_counter() - started
    publisher.close()
    print(json.dumps({"published": args.events, "elapsed_s": elapsed_s,
                      "most_unacked": windowed.most_outstanding}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
