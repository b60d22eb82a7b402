"""Kafka fixtures: every test gets its own topics and group on the session's Tansu broker."""

from __future__ import annotations

import uuid

import pytest

from core.settings import KafkaSettings


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """Topics and a consumer group no other test uses, and short sessions so group joins are quick."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return KafkaSettings.model_validate({
        "bootstrap_servers": [kafka_bootstrap],
        "topics": {name: f"{prefix}.{name}" for name in
                   ("events", "dead_letters", "violations", "rule_outputs", "checkpoints",
                                     "devices")},
        "partitions": 2,
        "group_id": f"{prefix}-processors",
        "alerts_group_id": f"{prefix}-alerts",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "checkpoint_interval_s": 0.5,
        "linger_ms": 1,
    })
