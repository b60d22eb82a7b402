"""The city set-up as separate processes: MQTT -> `citywatch ingest` -> Kafka -> two `citywatch process`
in one consumer group -> SQLite -> `citywatch api`. Real Mosquitto, real Kafka-protocol broker.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from citywatch.mqtt_publisher import MqttPublisher
from citywatch.roles import ApiRole
from core.models import Event
from core.settings import KafkaSettings, Settings
from processors.catalogue import partition_key
from tests.support.process import CitywatchProcess, bins
from tests.support.roles import RoleProcess, kafka_config
from tests.support.servers import Receiver
from tests.support.sse import StreamClient
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def reading(device_id: str, time_ms: int, fill_pct: float) -> bytes:
    return json.dumps({"device_id": device_id, "kind": "bin", "time": time_ms,
                       "attributes": {"fill_pct": fill_pct}}).encode()


def partition_of(device_id: str, partitions: int) -> int:
    """The partition the producer's default partitioner (murmur2, as Kafka's Java client) picks."""
    from kafka.partitioner.default import murmur2

    event = Event(event_id="", device_id=device_id, kind="bin", event_time_ms=0, ingest_time_ms=0)
    return (murmur2(partition_key(event).encode()) & 0x7FFFFFFF) % partitions


def events_partitions(role: RoleProcess, topic: str) -> list[int]:
    return [row["partition"] for row in role.get("/v1/status")["partitions"] if row["topic"] == topic]


def test_roles_scale_apart_and_a_partition_moves_with_its_state(
        kafka_settings: KafkaSettings, mosquitto_url: str, tmp_path: Path):
    # Two bins that land on different partitions, so each processor judges one of them.
    devices = [f"bin-{i}" for i in range(20)]
    by_partition: dict[int, str] = {}
    for device in devices:
        by_partition.setdefault(partition_of(device, 2), device)
    bin_0, bin_1 = by_partition[0], by_partition[1]
    config = kafka_config(kafka_settings, tmp_path, mosquitto_url, devices=bins(bin_0, bin_1))
    events_topic = kafka_settings.topics.events
    roles = [RoleProcess(tmp_path, "process", config, name="process-a").start()]
    try:
        roles.append(RoleProcess(tmp_path, "process", config, name="process-b").start())
        process_a, process_b = roles
        # The group rebalanced: one events partition each.
        wait_for(lambda: sorted(events_partitions(process_a, events_topic) +
                                events_partitions(process_b, events_topic)) == [0, 1]
                 and len(events_partitions(process_b, events_topic)) == 1, 30, 0.2,
                 "the two processors to share the two partitions")
        ingest = RoleProcess(tmp_path, "ingest", config).start()
        roles.append(ingest)
        api = RoleProcess(tmp_path, "api", config).start()
        roles.append(api)

        publisher = MqttPublisher(mosquitto_url, f"test-roles-{tmp_path.name}").connect()
        now_ms = int(time.time() * 1000)
        try:
            for device in (bin_0, bin_1):
                publisher.publish(f"citywatch/events/{device}", reading(device, now_ms, 93.0), wait=True)
                publisher.publish(f"citywatch/events/{device}", reading(device, now_ms + 1000, 97.0),
                                  wait=True)
            publisher.publish("citywatch/events/bin-x", b'{"device_id": ', wait=True)  # dead-lettered
            opened = wait_for(lambda: len(items := api.get("/v1/violations")["items"]) == 2 and items, 30,
                              0.2, "a violation from each processor")
            assert {v["device_id"] for v in opened} == {bin_0, bin_1}
            wait_for(lambda: api.get("/v1/dead-letters/summary")["by_reason"] == {"malformed_json": 1}, 20,
                     0.2, "the malformed message to be stored as a dead letter")

            # Lag and rates are visible from every role.
            status = wait_for(lambda: (s := api.get("/v1/status"))["lag_total"] == 0 and s, 20, 0.2,
                              "the api role to see the group caught up")
            assert {(row["topic"], row["partition"]) for row in status["partitions"]} >= {
                (events_topic, 0), (events_topic, 1)}
            # Committed offsets are exact; Tansu 0.6 under-reports the end offset after a multi-record
            # batch (ListOffsets answers the last batch's base offset + 1), Apache Kafka does not.
            assert sum(row["committed_offset"] for row in status["partitions"]
                       if row["topic"] == events_topic) == 4
            assert set(status["events_per_s"]) == {"ingest", "process"}
            assert ingest.get("/v1/status")["events_total"] == 4
            assert "citywatch_events_per_second" in ingest.get_text("/metrics")

            # One processor stops cleanly: its partition moves to the other with its open violation.
            assert process_b.stop() == 0
            wait_for(lambda: sorted(events_partitions(process_a, events_topic)) == [0, 1], 30, 0.2,
                     "the remaining processor to own both partitions")
            for device in (bin_0, bin_1):
                publisher.publish(f"citywatch/events/{device}", reading(device, now_ms + 2000, 3.0),
                                  wait=True)
            cleared = wait_for(lambda: len(items := api.get("/v1/violations", status="cleared")["items"]) == 2
                               and items, 30, 0.2, "both violations cleared by the remaining processor")
            assert {v["violation_id"] for v in cleared} == {v["violation_id"] for v in opened}
        finally:
            publisher.close()
    finally:
        for role in reversed(roles):
            if role.process is not None:
                assert role.stop() == 0, role.log()


def test_up_runs_every_role_in_one_process_on_kafka(kafka_settings: KafkaSettings, mosquitto_url: str,
                                                   tmp_path: Path):
    config: dict[str, Any] = {
        "bus": {"kind": "kafka", "kafka": kafka_settings.model_dump(mode="json")},
        "mqtt": {"url": mosquitto_url, "client_id": f"citywatch-{tmp_path.name}"},
        "pipeline": {"allowed_lateness_ms": 200},
        "devices": bins("bin-up"),
        "alerts": {"webhooks": {"allowed_private_networks": ["127.0.0.0/8"]}},  # the receiver is local
    }
    app = CitywatchProcess(tmp_path, config).start()
    publisher = MqttPublisher(mosquitto_url, f"test-up-{tmp_path.name}").connect()
    receiver = Receiver().start()
    stream: StreamClient | None = None
    try:
        subscribed = httpx.post(app.base_url + "/v1/subscriptions", json={"url": receiver.url}, timeout=10)
        assert subscribed.status_code == 201, subscribed.text
        stream = StreamClient(app.base_url).start()
        now_ms = int(time.time() * 1000)
        for offset_ms, fill in ((0, 95.0), (1000, 99.0)):
            publisher.publish("citywatch/events/bin-up", reading("bin-up", now_ms + offset_ms, fill),
                              wait=True)
        [opened] = wait_for(lambda: app.get("/v1/violations")["items"], 30, 0.2, "a violation")
        assert opened["device_id"] == "bin-up"
        status = app.get("/v1/status")
        assert status["role"] == "up" and status["ingest"]["events_total"] == 2
        assert {row["partition"] for row in status["process"]["partitions"]
                if row["topic"] == kafka_settings.topics.events} == {0, 1}
        # Streams and webhooks work in the one process too, fed from the violations topic, once each.
        [delivery] = wait_for(receiver.received, 20, 0.1, "the webhook delivery")
        wait_for(lambda: stream is not None and stream.changes, 10, 0.1, "the change on the stream")
        assert stream.keys() == [delivery.json()["idempotency_key"]]
        assert app.get("/v1/status")["alerts"]["dispatch_changes"] == 1
        assert len(receiver.received()) == 1
    finally:
        publisher.close()
        if stream is not None:
            stream.close()
        receiver.stop()
    assert app.stop() == 0


def test_the_api_role_refuses_requests_without_a_key(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    settings = Settings.model_validate({"bus": {"kind": "kafka", "kafka": kafka_settings.model_dump()},
                                        "store": {"data_dir": str(tmp_path)}})
    assert settings.api.auth == "required"  # the default, as in production
    with TestClient(create_app(ApiRole(settings).services())) as client:
        assert client.get("/v1/violations").status_code == 401
        assert client.get("/healthz").status_code == 200
