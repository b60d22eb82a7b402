"""Device changes made through the api role reach the running ingest and process roles over the compacted
devices topic: a bin registered through /v1/devices is accepted by ingest and judged by the processors
with its own installation depth and thresholds, without a restart. Real processes, Mosquitto and Tansu.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from citywatch.mqtt_publisher import MqttPublisher
from core.settings import DeviceSettings, KafkaSettings
from ingest.device_sync import DeviceChangePublisher, DeviceChangeReader
from processors.kafka_bus import ensure_topics
from tests.support.process import bins
from tests.support.roles import RoleProcess, kafka_config
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

TAGS = {"grid": "FT-11", "district": "futian", "department": "sanitation"}


def distance_reading(device_id: str, time_ms: int, distance_mm: float) -> bytes:
    return json.dumps({"device_id": device_id, "kind": "bin", "time": time_ms,
                       "attributes": {"distance_mm": distance_mm}}).encode()


def test_a_bin_registered_through_the_api_role_is_judged_by_the_running_processors(
        kafka_settings: KafkaSettings, mosquitto_url: str, tmp_path: Path) -> None:
    config = kafka_config(kafka_settings, tmp_path, mosquitto_url, devices=bins("bin-config"))
    roles = [RoleProcess(tmp_path, "process", config).start()]
    publisher = MqttPublisher(mosquitto_url, f"test-devices-{tmp_path.name}").connect()
    try:
        roles.append(RoleProcess(tmp_path, "ingest", config).start())
        api = RoleProcess(tmp_path, "api", config).start()
        roles.append(api)
        # 1.2 m deep, opens at 50 % full (the default is 90 %): only the registry knows either.
        created = httpx.post(api.base_url + "/v1/devices", timeout=10, json={
            "device_id": "bin-new", "kind": "bin", "lat": 22.54, "lon": 114.05, "tags": TAGS,
            "install": {"bin_depth_mm": 1200}, "thresholds": {"bin_overflow": {"open_pct": 50}}})
        assert created.status_code == 201, created.text
        # The change is on Kafka once the API answers; the other roles apply it within a poll. (A message
        # of the new bin arriving before that is dead-lettered as unknown_device.)
        wait_for(lambda: all(role.get("/v1/status")["device_changes_applied"] == 1 for role in roles[:2]),
                 10, 0.05, "ingest and process to apply the new bin")

        now_ms = int(time.time() * 1000)
        for offset_ms, distance_mm in ((0, 500.0), (1000, 480.0)):  # 58 % and 60 % full
            publisher.publish("citywatch/events/bin-new", distance_reading("bin-new", now_ms + offset_ms,
                                                                           distance_mm), wait=True)
        [violation] = wait_for(lambda: api.get("/v1/violations", device="bin-new")["items"], 30, 0.2,
                               "the new bin's overflow, judged with its registered depth and threshold")
        assert violation["type"] == "bin_overflow" and violation["tags"]["grid"] == "FT-11"
        assert api.get("/v1/dead-letters/summary")["by_reason"] == {}

        # Deactivated through the API: ingest dead-letters its next message.
        assert httpx.delete(api.base_url + "/v1/devices/bin-new", timeout=10).status_code == 200
        wait_for(lambda: roles[1].get("/v1/status")["device_changes_applied"] == 2, 10, 0.05,
                 "ingest to apply the deactivation")
        publisher.publish("citywatch/events/bin-new", distance_reading("bin-new", now_ms + 2000, 1100.0),
                          wait=True)
        wait_for(lambda: api.get("/v1/dead-letters/summary")["by_reason"] == {"inactive_device": 1}, 30,
                 0.2, "the deactivated bin's message to be dead-lettered")
        assert [v["status"] for v in api.get("/v1/violations", device="bin-new")["items"]] == ["open"]
    finally:
        publisher.close()
        for role in reversed(roles):
            if role.process is not None:
                assert role.stop() == 0, role.log()


def test_a_role_starting_later_applies_every_change_before_it_starts_then_follows(
        kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings)
    publisher = DeviceChangePublisher(kafka_settings)
    seen: dict[str, DeviceSettings] = {}
    lock = threading.Lock()

    def apply(device: DeviceSettings) -> None:
        with lock:
            seen[device.device_id] = device

    reader = DeviceChangeReader(kafka_settings, apply, client_id="test")
    try:
        publisher.publish(DeviceSettings(device_id="bin-1", kind="bin"))
        publisher.publish(DeviceSettings(device_id="bin-2", kind="bin"))
        publisher.publish(DeviceSettings(device_id="bin-1", kind="bin", active=False))
        reader.start()  # returns once the topic's content is applied: the latest settings win
        assert {device_id: device.active for device_id, device in seen.items()} == {
            "bin-1": False, "bin-2": True}
        publisher.publish(DeviceSettings(device_id="bin-3", kind="bin", install={"bin_depth_mm": 900}))
        wait_for(lambda: "bin-3" in seen, 10, 0.05, "the live change")
        assert seen["bin-3"].install == {"bin_depth_mm": 900}
    finally:
        reader.stop()
        publisher.close()
