"""Ingest role throughput on Kafka: MQTT messages/s through one `citywatch ingest` (in this process) to a
local Kafka-protocol broker (Tansu), every message confirmed by Kafka and acknowledged to the broker.

N QoS 1 readings are queued first in Mosquitto for the ingest's persistent session (the ingest is
offline while they are published), so the publisher's speed does not count. Then the ingest starts and
drains them; the time runs from its start until every event is confirmed by Kafka and no MQTT message
is left unacknowledged. Run: `python -m bench.ingest_kafka [--messages N] [--repeat R]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.e2e import machine
from citywatch.mqtt_publisher import MqttPublisher
from citywatch.roles import IngestRole
from core.settings import EmbeddedBrokerKind, Settings
from ingest.embedded_broker import EmbeddedBroker

DEVICES = 1000


def reading(i: int) -> bytes:
    device = i % DEVICES
    return json.dumps({"device_id": f"bin-{device:04d}", "kind": "bin",
                       "time": 1_764_133_200_000 + (i // DEVICES) * 1000,
                       "attributes": {"fill_pct": float(i % 100), "battery_pct": 87}}).encode()


def settings_for(mqtt_url: str, bootstrap: str) -> Settings:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    return Settings.model_validate({
        "bus": {"kind": "kafka", "kafka": {
            "bootstrap_servers": [bootstrap], "partitions": 2,
            "topics": {name: f"{prefix}.{name}" for name in
                       ("events", "dead_letters", "violations", "rule_outputs", "checkpoints", "devices")}}},
        "mqtt": {"url": mqtt_url, "client_id": f"{prefix}-ingest"},
        "devices": [{"device_id": f"bin-{d:04d}", "kind": "bin", "lat": 22.54, "lon": 114.05}
                    for d in range(DEVICES)],
    })


def wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.005)


def unacked(role: IngestRole) -> int:
    # Older ingests (acknowledging on hand-over) have no such count: nothing to wait for there.
    return int(getattr(role.ingest, "unacked", 0))


def drain(mqtt_url: str, bootstrap: str, messages: int) -> float:
    """Messages/s of one ingest draining `messages` queued readings into Kafka."""
    settings = settings_for(mqtt_url, bootstrap)
    first = IngestRole(settings)  # creates the topics and the persistent session, then goes offline
    first.start()
    assert first.ingest is not None
    wait(lambda: first.ingest is not None and first.ingest.subscribed, 30, "the first subscription")
    first.stop()

    publisher = MqttPublisher(mqtt_url, f"bench-pub-{uuid.uuid4().hex[:8]}").connect()
    try:
        infos = [publisher.publish(f"citywatch/events/bin-{i % DEVICES:04d}", reading(i))
                 for i in range(messages)]
        for info in infos:
            info.wait_for_publish(60)
    finally:
        publisher.close()

    role = IngestRole(settings)
    started = time.perf_counter()
    role.start()
    try:
        wait(lambda: role.rate.total >= messages, 600, "every event handed to Kafka")
        assert role.producer is not None
        role.producer.flush(60)
        wait(lambda: unacked(role) == 0, 60, "every MQTT message acknowledged")
        elapsed = time.perf_counter() - started
    finally:
        role.stop()
    assert role.rate.total == messages, role.rate.total
    return messages / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from tests.support.tansu import TansuBroker  # the same launcher the tests use (dev-only)

    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="citywatch-bench-ingest-") as work:
        tansu = TansuBroker(Path(work) / "tansu.log").start()
        mosquitto = EmbeddedBroker(kind=EmbeddedBrokerKind.MOSQUITTO)
        mqtt_url = mosquitto.start()
        try:
            rates = [drain(mqtt_url, tansu.bootstrap, args.messages) for _ in range(args.repeat)]
        finally:
            mosquitto.stop()
            tansu.stop()
    print(f"ingest role, {args.messages} QoS 1 messages (one event each) per run: "
          f"{', '.join(f'{r:,.0f}' for r in rates)} msg/s; median {statistics.median(rates):,.0f} msg/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
