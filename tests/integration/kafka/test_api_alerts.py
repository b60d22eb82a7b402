"""Streams and webhooks of the api role over Kafka: two api replicas read the violations topic that the
process role writes. Each replica streams every change to its own clients; each change is delivered to
a webhook once, whatever the number of replicas, a duplicate record on the topic, or an api restart.
Real processes, real Mosquitto, real Kafka-protocol broker (Tansu).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from citywatch.mqtt_publisher import MqttPublisher
from core.settings import KafkaSettings
from tests.conftest import connect_client
from tests.support.process import bins
from tests.support.roles import RoleProcess, kafka_config
from tests.support.servers import Receiver
from tests.support.sse import StreamClient
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def reading(device_id: str, time_ms: int, fill_pct: float) -> bytes:
    return json.dumps({"device_id": device_id, "kind": "bin", "time": time_ms,
                       "attributes": {"fill_pct": fill_pct}}).encode()


def dispatch_partitions(api: RoleProcess) -> list[int]:
    return list(api.get("/v1/status")["alerts"]["dispatch_partitions"])


def replay_violation_records(settings: KafkaSettings) -> int:
    """Send every record of the violations topic again, as a processor replaying a batch would."""
    topic = settings.topics.violations
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        for record in records:
            producer.send(topic, key=record.key, value=record.value)
        producer.flush(10)
        return len(records)
    finally:
        consumer.close()
        producer.close()


def test_two_api_replicas_stream_every_change_and_deliver_each_webhook_once(
        kafka_settings: KafkaSettings, mosquitto_url: str, tmp_path: Path) -> None:
    config = {
        # One data directory: one webhook store.
        **kafka_config(kafka_settings, tmp_path, mosquitto_url),
        "devices": bins("bin-a"),
        "alerts": {"stream_heartbeat_s": 0.5,
                   "webhooks": {"sync_interval_s": 0.2, "allowed_private_networks": ["127.0.0.0/8"]},
                   "mqtt": {"enabled": True, "topic_prefix": f"{tmp_path.name}/violations"}},
    }
    receiver = Receiver().start()
    # The MQTT alert output, enabled on both replicas, publishes each change once too.
    topic_messages: list[dict[str, Any]] = []
    subscriber = connect_client(mosquitto_url)
    subscriber.on_message = lambda client, userdata, message: topic_messages.append(
        json.loads(message.payload))
    subscriber.subscribe(f"{tmp_path.name}/violations/#", qos=1)
    roles = [RoleProcess(tmp_path, "process", config).start()]
    streams: list[StreamClient] = []
    publisher = MqttPublisher(mosquitto_url, f"test-api-alerts-{tmp_path.name}").connect()
    try:
        roles.append(RoleProcess(tmp_path, "ingest", config).start())
        # Started together, so that they join the group in one rebalance.
        api_a = RoleProcess(tmp_path, "api", config, name="api-a").start(wait_ready=False)
        api_b = RoleProcess(tmp_path, "api", config, name="api-b").start(wait_ready=False)
        roles += [api_a, api_b]
        wait_for(lambda: api_a.ready() and api_b.ready(), 30, 0.1, "both api replicas to be ready")
        # The replicas split the violations partitions for dispatch.
        wait_for(lambda: sorted(dispatch_partitions(api_a) + dispatch_partitions(api_b)) == [0, 1]
                 and dispatch_partitions(api_b), 30, 0.2, "the api replicas to share the dispatch")
        created = httpx.post(api_a.base_url + "/v1/subscriptions", json={"url": receiver.url}, timeout=10)
        assert created.status_code == 201, created.text
        subscription_id = created.json()["subscription_id"]
        streams = [StreamClient(api_a.base_url).start(), StreamClient(api_b.base_url).start()]

        now_ms = int(time.time() * 1000)
        for offset_ms, fill in ((0, 93.0), (1000, 97.0)):
            publisher.publish("citywatch/events/bin-a", reading("bin-a", now_ms + offset_ms, fill), wait=True)
        [opened] = wait_for(receiver.received, 30, 0.1, "the webhook delivery of the opened violation")
        assert opened.json()["change"] == "opened"
        for stream in streams:
            wait_for(lambda stream=stream: stream.changes, 10, 0.1, "the change on each replica's stream")

        # A processor replays its batch: the same violation record lands on the topic again.
        assert replay_violation_records(kafka_settings) == 1
        def alerts_read(counter: str) -> list[int]:
            return [api.get("/v1/status")["alerts"][counter] for api in (api_a, api_b)]

        wait_for(lambda: alerts_read("streams_changes") == [2, 2]
                 and sum(alerts_read("dispatch_changes")) == 2,
                 20, 0.2, "both replicas to read the replayed record")
        for stream in streams:
            assert stream.keys() == [opened.json()["idempotency_key"]]
        deliveries = api_b.get(f"/v1/subscriptions/{subscription_id}/deliveries")
        assert [d["status"] for d in deliveries] == ["delivered"]

        # Every replica stops; the violation clears meanwhile; one comes back and delivers the clear from
        # its group's committed offset: nothing skipped, nothing repeated. A stream client still
        # connected to api-a does not hold its shutdown.
        streams[1].close()
        assert api_a.stop() == 0
        wait_for(lambda: dispatch_partitions(api_b) == [0, 1], 30, 0.2, "api-b to take over the dispatch")
        assert api_b.stop() == 0
        publisher.publish("citywatch/events/bin-a", reading("bin-a", now_ms + 2000, 3.0), wait=True)
        api_b.start()
        wait_for(lambda: len(receiver.received()) >= 2, 30, 0.1, "the webhook delivery of the clear")
        # It resumed after the committed offsets: it read the clear alone, not the opened change again.
        assert api_b.get("/v1/status")["alerts"]["dispatch_changes"] == 1
        received = receiver.received()
        assert [r.json()["change"] for r in received] == ["opened", "cleared"]
        assert len({r.json()["idempotency_key"] for r in received}) == 2
        assert {r.json()["violation"]["violation_id"] for r in received} == {
            opened.json()["violation"]["violation_id"]}
        wait_for(lambda: len(topic_messages) >= 2, 10, 0.1, "the MQTT output messages")
        assert [m["idempotency_key"] for m in topic_messages] == [
            r.json()["idempotency_key"] for r in received]
    finally:
        publisher.close()
        for stream in streams:
            stream.close()
        for role in reversed(roles):
            if role.process is not None:
                assert role.stop() == 0, role.log()
        receiver.stop()
        subscriber.disconnect()
        subscriber.loop_stop()
