"""Kafka fixtures: one Tansu broker for the session; every test gets its own topics and group."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from citywatch.settings import KafkaSettings
from tests.support.tansu import TansuBroker


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broker = TansuBroker(Path(tmp_path_factory.mktemp("tansu")) / "tansu.log").start()
    yield broker.bootstrap
    broker.stop()


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """Topics and a consumer group no other test uses, and short sessions so group joins are quick."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return KafkaSettings.model_validate({
        "bootstrap_servers": [kafka_bootstrap],
        "topics": {name: f"{prefix}.{name}" for name in
                   ("events", "dead_letters", "violations", "rule_outputs", "checkpoints")},
        "partitions": 2,
        "group_id": f"{prefix}-processors",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "checkpoint_interval_s": 0.5,
        "linger_ms": 1,
    })
