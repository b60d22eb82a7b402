"""Traffic rules in the city set-up: signals and camera tracks over real Mosquitto into `citywatch ingest`,
through Kafka (Tansu) to `citywatch process`, a red-light violation with its evidence out of the store.

The signal controller and the camera are different devices; they meet in one engine only because both
are keyed by their intersection. Every message is published twice (an MQTT QoS 1 redelivery, a device
re-sending): the duplicates must not double the violation.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from bench.intersection_feed import CAMERA, INTERSECTION, SIGNALS, scenario_config
from citywatch.mqtt_publisher import MqttPublisher
from core.settings import KafkaSettings
from processors.kafka_bus import partition_for
from tests.support.roles import RoleProcess, kafka_config
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def message(device_id: str, kind: str, time_ms: int, **attributes: Any) -> bytes:
    return json.dumps({"device_id": device_id, "kind": kind, "time": time_ms,
                       "attributes": attributes}, ensure_ascii=False).encode()


def test_red_light_runner_is_judged_once_across_ingest_and_process_roles(
        kafka_settings: KafkaSettings, mosquitto_url: str, tmp_path: Path) -> None:
    # Three partitions: the camera's and the signal controller's own ids land on different ones, so only
    # keying by intersection brings them together.
    kafka_settings = kafka_settings.model_copy(update={"partitions": 3})
    assert partition_for(CAMERA, 3) != partition_for(SIGNALS, 3)
    config = {**scenario_config(), **kafka_config(kafka_settings, tmp_path, mosquitto_url,
                                                 pipeline={"allowed_lateness_ms": 300})}
    roles = [RoleProcess(tmp_path, "process", config).start()]
    try:
        roles.append(RoleProcess(tmp_path, "ingest", config).start())
        api = RoleProcess(tmp_path, "api", config).start()
        roles.append(api)
        publisher = MqttPublisher(mosquitto_url, f"test-traffic-roles-{tmp_path.name}").connect()
        now_ms = int(time.time() * 1000)
        messages = [
            (SIGNALS, message(SIGNALS, "signal", now_ms, intersection=INTERSECTION, phase="north_through",
                              state="red")),
            (CAMERA, message(CAMERA, "track", now_ms + 2000, track_id="t1", stage="new", label="car",
                             zones=["stop_north"], plate="粤B12345", snapshot_url="http://nvr/t1.jpg")),
        ]
        try:
            for _ in range(2):
                for device, payload in messages:
                    publisher.publish(f"citywatch/events/{device}", payload, wait=True)
            # All four deliveries are judged and committed: the processors are done with them.
            wait_for(lambda: (status := api.get("/v1/status"))["lag_total"] == 0
                     and sum(row["committed_offset"] for row in status["partitions"]
                             if row["topic"] == kafka_settings.topics.events) == 4,
                     30, 0.2, "the processor group to commit the four deliveries")
            red = wait_for(lambda: api.get("/v1/violations", type="red_light")["items"], 15, 0.2,
                           "the red-light violation in the store")
        finally:
            publisher.close()
        assert len(red) == 1, red
        [violation] = red
        assert violation["device_id"] == CAMERA and violation["status"] == "open"
        assert violation["evidence"]["plate"] == "粤B12345"
        assert violation["evidence"]["details"]["signal"]["for_ms"] == 2000
        assert violation["evidence"]["event_ids"], violation["evidence"]
        assert violation["tags"]["department"] == "traffic_police"
        # The duplicate deliveries were dropped before the store: one signal and one track event each.
        assert len(api.get("/v1/events", device=CAMERA)["items"]) == 1
        assert len(api.get("/v1/events", device=SIGNALS)["items"]) == 1
    finally:
        for role in reversed(roles):
            if role.process is not None:
                assert role.stop() == 0, role.log()
