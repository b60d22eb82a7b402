"""The role commands refuse a configuration they cannot run, with a message, before touching the network."""

from __future__ import annotations

import msgspec
import pytest
import yaml

from citywatch.cli import main
from core.settings import Settings


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


def test_each_partition_judges_the_silence_of_the_devices_whose_events_it_receives():
    from citywatch.roles import ProcessRole
    from processors.catalogue import partition_key
    from processors.kafka_bus import partition_for
    from tests.support.events import reading

    devices = [{"device_id": f"bin-{i}", "kind": "bin", "expected_interval_s": 60} for i in range(12)]
    devices.append({"device_id": "det-1", "kind": "detector", "expected_interval_s": 60,
                    "tags": {"intersection": "x-7"}})
    settings = Settings.model_validate({"bus": {"kind": "kafka"}, "devices": devices})
    role = ProcessRole(settings)
    judged: dict[str, int] = {}
    for partition in range(3):
        [offline] = [rule for rule in role.new_engine(partition, 3).rules if rule.name == "device_offline"]
        for device_id in offline.limits_ms:
            assert device_id not in judged, f"{device_id} judged on two partitions"
            judged[device_id] = partition
    assert set(judged) == {device["device_id"] for device in devices}
    for device_id, partition in judged.items():
        event = reading(device_id, 0)
        if device_id == "det-1":
            event = msgspec.structs.replace(event, tags={"intersection": "x-7"})
        assert partition_for(partition_key(event), 3) == partition  # where its events go
    # Each engine has its own rule instances: a rule's own clock is never advanced twice per step.
    assert role.new_engine(0, 3).rules[0] is not role.new_engine(0, 3).rules[0]
