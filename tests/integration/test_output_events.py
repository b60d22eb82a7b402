"""The MQTT and Kafka outputs send the kinds of change their `events` setting lists, against a real
Mosquitto and a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import json
import threading
import uuid
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import pytest
from kafka import KafkaConsumer
from pydantic import ValidationError

from core.case_settings import CasePriority, Verification
from core.settings import KafkaOutputSettings, MqttOutputSettings
from processors.cases.model import Case, CaseOrigin, CaseState
from processors.cases.sla import CaseEventKind, CaseSlaEvent
from processors.outputs.feed import ViolationFeed
from processors.outputs.kafka_out import KafkaViolationOutput
from processors.outputs.mqtt_out import MqttViolationOutput
from tests.support.alerts import violation
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

CASE = Case(case_id="c_0001", type="bin_overflow", state=CaseState.DISPATCHED, priority=CasePriority.HIGH,
            verify=Verification.SENSOR, origin=CaseOrigin.VIOLATION, created_by="routing",
            created_time_ms=1_000, updated_time_ms=2_000, department="sanitation", grid="FT-11",
            district="futian", lat=22.54, lon=114.05, deadline_ms=10_000, warning_ms=8_000)


def publish_one_of_each(feed: ViolationFeed) -> None:
    feed.publish([violation(1)])
    feed.publish_case_events([CaseSlaEvent(CaseEventKind.SLA_WARNING, CASE, 8_000, 8_100),
                              CaseSlaEvent(CaseEventKind.SLA_BREACH, CASE, 10_000, 10_100)])


def test_the_mqtt_output_publishes_only_the_breaches_it_is_set_to(mosquitto_url: str) -> None:
    prefix = f"out-{uuid.uuid4().hex[:8]}"
    received: list[tuple[str, dict]] = []
    subscribed = threading.Event()
    listener = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-listener")
    listener.on_subscribe = lambda *_: subscribed.set()
    listener.on_message = lambda _c, _u, msg: received.append((msg.topic, json.loads(msg.payload)))
    broker = urlparse(mosquitto_url)
    listener.connect(broker.hostname or "127.0.0.1", broker.port or 1883)
    listener.subscribe(f"{prefix}/#", qos=1)
    listener.loop_start()
    feed = ViolationFeed(100)
    output = MqttViolationOutput(MqttOutputSettings(enabled=True, topic_prefix=prefix,
                                                    client_id=f"{prefix}-out", events=["case_sla_breach"]),
                                 mosquitto_url, feed)
    feed.add_listener(output)
    try:
        assert subscribed.wait(10)
        output.start()
        publish_one_of_each(feed)
        wait_for(lambda: output.sent == 1, 20, message="the breach sent")
        wait_for(lambda: len(received) == 1, 20, message="the breach received")
    finally:
        output.stop()
        listener.loop_stop()
        listener.disconnect()
    topic, message = received[0]
    assert topic == f"{prefix}/cases/case_sla_breach/bin_overflow/FT-11"
    assert message["change"] == "case_sla_breach" and message["case"]["case_id"] == "c_0001"


def test_the_kafka_output_publishes_only_violation_changes_when_set_to(kafka_bootstrap: str) -> None:
    topic = f"violations-{uuid.uuid4().hex[:8]}"
    feed = ViolationFeed(100)
    output = KafkaViolationOutput(KafkaOutputSettings(enabled=True, bootstrap_servers=kafka_bootstrap,
                                                      topic=topic, events=["violation"]), feed)
    feed.add_listener(output)
    output.start()
    try:
        publish_one_of_each(feed)
        feed.publish([violation(2)])  # after the case events: had they been sent, they would come first
        wait_for(lambda: output.sent == 2, 30, message="two violation changes sent")
    finally:
        output.stop()
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5_000, group_id=None)
    try:
        changes = [json.loads(record.value)["change"] for record in consumer]
    finally:
        consumer.close()
    assert changes == ["opened", "opened"]


def test_by_default_an_output_sends_every_kind_and_an_empty_or_unknown_list_is_refused() -> None:
    assert MqttOutputSettings().events == ["violation", "case_sla_warning", "case_sla_breach"]
    assert KafkaOutputSettings().events == ["violation", "case_sla_warning", "case_sla_breach"]
    with pytest.raises(ValidationError, match="lists nothing to publish"):
        MqttOutputSettings(events=[])
    with pytest.raises(ValidationError) as refused:
        KafkaOutputSettings(events=["violation", "case_breach"])
    assert [error["loc"] for error in refused.value.errors()] == [("events", 1)]
