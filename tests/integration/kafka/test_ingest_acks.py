"""`citywatch ingest` acknowledges an MQTT message only once Kafka confirmed what it became: with Kafka
down, QoS 1 messages stay unacknowledged, survive a crash of ingest in the broker's session and reach
Kafka after the restart; a clean stop acknowledges everything, so a restart receives nothing twice.
Real Mosquitto, real Kafka-protocol broker (its own Tansu, stopped and started again on its port)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from kafka import KafkaConsumer, TopicPartition

from citywatch.mqtt_publisher import MqttPublisher
from core.models import Event
from core.settings import KafkaSettings
from tests.support.process import bins
from tests.support.roles import RoleProcess
from tests.support.tansu import TansuBroker
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def reading(device_id: str, time_ms: int) -> bytes:
    return json.dumps({"device_id": device_id, "kind": "bin", "time": time_ms,
                       "attributes": {"fill_pct": 10.0}}).encode()


def devices_on_kafka(settings: KafkaSettings, count: int) -> list[str]:
    """The device ids of the first `count` events on the events topic (waits for them)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    decoder = msgspec.msgpack.Decoder(Event)
    try:
        tps = [TopicPartition(settings.topics.events, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        devices: list[str] = []

        def enough() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                devices.extend(decoder.decode(record.value).device_id for record in batch)
            return len(devices) >= count

        wait_for(enough, 30, 0, f"{count} events on {settings.topics.events}")
        return devices
    finally:
        consumer.close()


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[TansuBroker]:
    """A Kafka-protocol broker this test may stop; memory storage, so a restart starts empty."""
    broker = TansuBroker(tmp_path / "tansu.log").start()
    yield broker
    broker.stop()


def test_ingest_acknowledges_only_what_kafka_confirmed(own_kafka: TansuBroker, kafka_settings: KafkaSettings,
                                                      mosquitto_url: str, tmp_path: Path) -> None:
    settings = kafka_settings.model_copy(update={"bootstrap_servers": [own_kafka.bootstrap]})
    devices = [f"bin-{i}" for i in range(10)]
    config: dict[str, Any] = {
        "bus": {"kind": "kafka", "kafka": settings.model_dump(mode="json")},
        "mqtt": {"url": mosquitto_url, "client_id": f"citywatch-{tmp_path.name}"},
        "devices": bins("bin-first", "bin-marker", *devices),
    }
    now_ms = int(time.time() * 1000)
    publisher = MqttPublisher(mosquitto_url, f"test-acks-{tmp_path.name}").connect()
    ingest = RoleProcess(tmp_path, "ingest", config).start()
    try:
        publisher.publish("citywatch/events/bin-first", reading("bin-first", now_ms), wait=True)
        assert devices_on_kafka(settings, 1) == ["bin-first"]  # the producer knows the topics' leaders
        wait_for(lambda: ingest.get("/v1/status")["mqtt_unacked"] == 0, 10, 0.1, "bin-first acknowledged")

        own_kafka.stop()
        for device in devices:  # the broker has them (the publisher waits for its PUBACK)
            publisher.publish(f"citywatch/events/{device}", reading(device, now_ms), wait=True)
        # Handed to the producer, which cannot deliver them: none is acknowledged.
        wait_for(lambda: ingest.get("/v1/status")["events_total"] == 11, 10, 0.1, "all 10 in ingest")
        assert ingest.get("/v1/status")["mqtt_unacked"] == 10
        ingest.kill()  # a crash: the producer's buffer is gone

        restarted = TansuBroker(tmp_path / "tansu-2.log")
        restarted.port = own_kafka.port  # the same address: the ingest's configuration is unchanged
        own_kafka.process = restarted.start().process
        ingest = RoleProcess(tmp_path, "ingest", config, name="ingest-2").start()
        # The broker redelivers the unacknowledged session messages to the same client id.
        assert sorted(devices_on_kafka(settings, 10)) == devices
        wait_for(lambda: ingest.get("/v1/status")["mqtt_unacked"] == 0, 10, 0.1, "all acknowledged")
        assert ingest.stop() == 0

        # A clean stop acknowledged everything: the next session receives only what is new.
        ingest = RoleProcess(tmp_path, "ingest", config, name="ingest-3").start()
        publisher.publish("citywatch/events/bin-marker", reading("bin-marker", now_ms), wait=True)
        assert "bin-marker" in devices_on_kafka(settings, 11)
        # A resumed session gets its unacknowledged messages before new ones: none came before the marker.
        assert ingest.get("/v1/status")["events_total"] == 1
    finally:
        publisher.close()
        if ingest.process is not None:
            assert ingest.stop() == 0, ingest.log()
