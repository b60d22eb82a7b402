"""Publishes native bin readings over MQTT as fast as allowed (or at a fixed rate), in its own process.

Each payload carries `sent_ns` (wall clock) so the pipeline side can measure publish-to-stored latency.
Run by bench/e2e.py; prints one JSON line with what it published.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from citywatch.mqtt_publisher import MqttPublisher

OVERFLOW_CYCLE = (95.0, 97.0, 5.0, 12.0, 21.0, 33.0, 45.0, 58.0, 70.0, 82.0)
# QoS 1 publishes accepted by paho and not acknowledged yet, at most. paho gives each one a 16-bit packet id
# as it is queued (not as it is sent), so past 65,535 outstanding publishes the ids collide and paho
# refuses the new ones with MQTT_ERR_QUEUE_SIZE, which a publisher that does not check loses silently.
ACK_WINDOW = 10_000
# At a fixed rate, the publisher sleeps only once it is this far ahead: the readings of a few milliseconds
# go out together. Sleeping before every reading (200 us apart at 5,000/s) made the publisher itself take
# more than a core of the machine it shares with what it measures (BENCHMARKS.md, "1,000 webhooks ...").
PACE_S = 0.005
# How long the C client's input stays open after the last reading (see _publish_with_c_client).
C_CLIENT_TAIL_S = 1.0


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
    parser.add_argument("--client", choices=["paho", "c"], default="paho",
                        help="paho: this process publishes, each publish checked and acknowledged; c: "
                        "Mosquitto's C client (mosquitto_pub -l) publishes the readings this process "
                        "writes to it, at a small fraction of paho's CPU (for fixed-rate runs on a machine "
                        "shared with what they measure)")
    args = parser.parse_args()
    readings = _readings(args)
    if args.client == "c":
        elapsed_s, most_unacked = _publish_with_c_client(args, readings)
    else:
        elapsed_s, most_unacked = _publish_with_paho(args, readings)
    print(json.dumps({"published": args.events, "elapsed_s": elapsed_s, "most_unacked": most_unacked}),
          flush=True)
    return 0


def _readings(args: argparse.Namespace) -> Iterator[list[tuple[str, bytes]]]:
    """(topic, payload) of the readings, in bursts paced to `--rate` (one burst per PACE_S, or one per
    reading at full speed); `sent_ns` is stamped when a reading is made."""
    rng = random.Random(1)
    started = time.perf_counter()
    burst: list[tuple[str, bytes]] = []
    for n, i in enumerate(range(args.first, args.first + args.events)):
        if args.rate:
            ahead_s = n / args.rate - (time.perf_counter() - started)
            if ahead_s > PACE_S:
                yield burst
                burst = []
                time.sleep(ahead_s)
        device_id = f"bench-{i % args.devices:05d}"
        now_ns = time.time_ns()
        if args.workload == "churn":
            fill = round(rng.uniform(0, 100), 1)  # every reading a jump: violations open and clear constantly
        elif args.workload == "overflow":
            fill = OVERFLOW_CYCLE[(i // args.devices) % len(OVERFLOW_CYCLE)]
        else:
            fill = ((i // args.devices + (i % args.devices) * 37) * 0.5) % 100.5
        body = {"device_id": device_id, "kind": "bin", "time": now_ns // 1_000_000,
                "attributes": {"fill_pct": round(min(fill, 100.0), 1), "sent_ns": now_ns, "seq": i}}
        burst.append((f"citywatch/events/{device_id}", json.dumps(body).encode()))
        if not args.rate:
            yield burst
            burst = []
    yield burst


def _publish_with_paho(args: argparse.Namespace,
                       readings: Iterator[list[tuple[str, bytes]]]) -> tuple[float, int]:
    publisher = MqttPublisher(args.url, args.client_id, qos=args.qos).connect()
    windowed = WindowedPublisher(publisher, args.window)
    started = time.perf_counter()
    for burst in readings:
        for topic, payload in burst:
            windowed.publish(topic, payload)
    windowed.drain()
    elapsed_s = time.perf_counter() - started
    publisher.close()
    return elapsed_s, windowed.most_outstanding


def _publish_with_c_client(args: argparse.Namespace,
                           readings: Iterator[list[tuple[str, bytes]]]) -> tuple[float, int | None]:
    """mosquitto_pub -l sends each line as a message to one topic: the readings carry their device id, so
    they go to `citywatch/events` (a native topic without a device level). It is not told when a QoS 1
    message was acknowledged (None unacknowledged at most), and it ends at the end of its input without
    waiting for the acknowledgements: the input stays open C_CLIENT_TAIL_S longer, and the pipeline's side
    counts what it stored."""
    url = urlparse(args.url)
    command = ["mosquitto_pub", "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 1883),
               "-q", str(args.qos), "-i", args.client_id, "-t", "citywatch/events", "-l",
               "-M", str(min(args.window, 65_535))]
    process = subprocess.Popen(command, stdin=subprocess.PIPE)
    assert process.stdin is not None
    started = time.perf_counter()
    for burst in readings:
        process.stdin.write(b"".join(payload + b"\n" for _, payload in burst))
        if args.rate:
            process.stdin.flush()  # each paced burst leaves now, not when the pipe's buffer is full
    process.stdin.flush()
    elapsed_s = time.perf_counter() - started
    time.sleep(C_CLIENT_TAIL_S)
    process.stdin.close()
    if process.wait(60) != 0:
        raise RuntimeError(f"mosquitto_pub exited with code {process.returncode}")
    return elapsed_s, None


if __name__ == "__main__":
    sys.exit(main())
