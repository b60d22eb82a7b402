"""The role commands refuse a configuration they cannot run, with a message, before touching the network."""

from __future__ import annotations

import pytest
import yaml

from citywatch.cli import main
from citywatch.settings import Settings


@pytest.mark.parametrize("role", ["ingest", "process", "api"])
def test_a_role_needs_the_kafka_bus(role, tmp_path, capsys):
    config = tmp_path / "citywatch.yaml"
    config.write_text(yaml.safe_dump({"bus": {"kind": "inprocess"}, "store": {"data_dir": str(tmp_path)},
                                      "mqtt": {"url": "mqtt://127.0.0.1:1"}}))
    assert main([role, "--config", str(config)]) == 2
    assert "bus.kind: kafka" in capsys.readouterr().err


def test_ingest_needs_a_broker_to_subscribe_to(tmp_path, capsys):
    config = tmp_path / "citywatch.yaml"
    config.write_text(yaml.safe_dump({"bus": {"kind": "kafka"}}))
    assert main(["ingest", "--config", str(config)]) == 2
    assert "mqtt.url" in capsys.readouterr().err


def test_up_on_kafka_does_not_simulate(tmp_path, capsys):
    config = tmp_path / "citywatch.yaml"
    config.write_text(yaml.safe_dump({"bus": {"kind": "kafka"}}))
    assert main(["up", "--simulate", "--config", str(config)]) == 2
    assert "citywatch simulate" in capsys.readouterr().err


def test_kafka_settings_are_checked_at_load():
    with pytest.raises(ValueError, match="heartbeat_interval_ms must be below session_timeout_ms"):
        Settings.model_validate({"bus": {"kind": "kafka", "kafka": {"session_timeout_ms": 6000,
                                                                     "heartbeat_interval_ms": 6000}}})
    with pytest.raises(ValueError, match=r"bus\.kafka\.topic"):
        Settings.model_validate({"bus": {"kafka": {"topic": "typo"}}})
