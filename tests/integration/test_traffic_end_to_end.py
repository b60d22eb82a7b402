"""Signals and camera tracks over a real Mosquitto into `citywatch up`, violations out of the HTTP API."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from bench.intersection_feed import CAMERA, SIGNALS, SMART_CAMERA, scenario_config
from citywatch.mqtt_publisher import MqttPublisher
from tests.support.process import CitywatchProcess
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def message(device_id: str, kind: str, time_ms: int, **attributes: Any) -> bytes:
    return json.dumps({"device_id": device_id, "kind": kind, "time": time_ms,
                       "attributes": attributes}, ensure_ascii=False).encode()


def test_red_light_runner_and_smart_camera_report_reach_the_api(mosquitto_url, tmp_path):
    config = {**scenario_config(), "pipeline": {"allowed_lateness_ms": 300},
              "mqtt": {"url": mosquitto_url, "client_id": f"citywatch-{tmp_path.name}"}}
    app = CitywatchProcess(tmp_path, config).start()
    publisher = MqttPublisher(mosquitto_url, "test-traffic-e2e").connect()
    now_ms = int(time.time() * 1000)
    try:
        def send(device: str, kind: str, at_ms: int, **attributes: Any) -> None:
            publisher.publish(f"citywatch/events/{device}", message(device, kind, at_ms, **attributes),
                              wait=True)

        send(SIGNALS, "signal", now_ms, intersection="ix-demo", phase="north_through", state="red")
        # t0 is published after t1 although it happened before: the engine judges in event-time order.
        send(CAMERA, "track", now_ms + 2000, track_id="t1", stage="new", label="car", zones=["stop_north"],
             plate="粤B12345", snapshot_url="http://nvr/t1.jpg")
        send(CAMERA, "track", now_ms + 1500, track_id="t0", stage="new", label="car", zones=[])
        send(SMART_CAMERA, "camera_violation", now_ms, violation_code="1039", plate=7)
        send(SMART_CAMERA, "camera_violation", now_ms + 100, violation_code="1039", plate="粤B7")

        [red] = wait_for(lambda: app.get("/v1/violations", type="red_light")["items"], 15,
                         message="red-light violation via the API")
        assert red["device_id"] == CAMERA and red["evidence"]["plate"] == "粤B12345"
        assert red["evidence"]["details"]["signal"]["for_ms"] == 2000
        assert red["evidence"]["details"]["points"] == 6
        assert red["tags"]["department"] == "traffic_police"
        [parking] = wait_for(lambda: app.get("/v1/violations", type="illegal_parking")["items"], 15)
        assert parking["evidence"]["plate"] == "粤B7"
        letters = wait_for(lambda: app.get("/v1/dead-letters", reason="invalid_field")["items"], 10)
        assert letters[0]["detail"].startswith("attributes.plate")
    finally:
        publisher.close()
    assert app.stop() == 0
