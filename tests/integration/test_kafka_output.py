"""Violation changes to a Kafka topic, against a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import json
import uuid

import pytest
from kafka import KafkaConsumer

from core.models import ViolationStatus
from core.settings import KafkaOutputSettings
from processors.outputs.feed import ViolationFeed
from processors.outputs.kafka_out import KafkaViolationOutput
from tests.support.alerts import violation
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def test_changes_are_published_keyed_by_violation_id_with_masked_plates(kafka_bootstrap: str) -> None:
    topic = f"violations-{uuid.uuid4().hex[:8]}"
    feed = ViolationFeed(100)
    settings = KafkaOutputSettings(enabled=True, bootstrap_servers=kafka_bootstrap, topic=topic)
    output = KafkaViolationOutput(settings, feed)
    feed.add_listener(output)
    output.start()
    try:
        feed.publish([violation(1), violation(2)])
        feed.publish([violation(1, status=ViolationStatus.CLEARED, updated_offset_ms=1000)])
        wait_for(lambda: output.sent == 3, 30, message="three changes sent")
    finally:
        output.stop()
    assert output.failed == 0 and output.dropped == 0

    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=10_000, group_id=None)
    try:
        records = []
        for record in consumer:
            records.append(record)
            if len(records) == 3:
                break
    finally:
        consumer.close()
    messages = [(r.key.decode(), json.loads(r.value)) for r in records]
    by_key = {}
    for key, message in messages:
        by_key.setdefault(key, []).append(message["change"])
        assert message["violation"]["evidence"]["plate"] == "粤B1****"
    assert by_key == {"v0001": ["opened", "cleared"], "v0002": ["opened"]}
