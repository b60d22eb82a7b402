"""Sanitation and environment rules through the whole pipeline: a real Mosquitto, `citywatch up` as a
process, real SQLite and HTTP. Bins reporting ultrasonic distance, a bin fire, a black-odorous river, a
smelly toilet, a stuck sensor, and a device that falls silent and comes back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from citywatch.mqtt_publisher import MqttPublisher
from tests.support.process import CitywatchProcess
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

TAGS = {"grid": "FT-11", "district": "futian"}


def device(device_id: str, kind: str, department: str, **extra: Any) -> dict[str, Any]:
    return {"device_id": device_id, "kind": kind, "lat": 22.54, "lon": 114.05,
            "tags": {**TAGS, "department": department, **extra.pop("tags", {})}, **extra}


DEVICES = [
    device("bin-u", "bin", "sanitation", install={"bin_depth_mm": 1000}),
    device("probe-1", "water", "water", tags={"water_body": "futian-river"}),
    device("wc-1", "odour", "sanitation"),
    device("pm-1", "air", "environment"),
    # Reports every second: silent for 3 s (watched) it is offline.
    device("beacon-1", "bin", "sanitation", expected_interval_s=1),
]


def message(device_id: str, kind: str, time_ms: int, **attributes: Any) -> bytes:
    return json.dumps({"device_id": device_id, "kind": kind, "time": time_ms,
                       "attributes": attributes}).encode()


@pytest.fixture
def app(mosquitto_url: str, tmp_path: Path) -> Iterator[CitywatchProcess]:
    config = {"devices": DEVICES, "pipeline": {"allowed_lateness_ms": 200},
              "mqtt": {"url": mosquitto_url, "client_id": f"citywatch-{tmp_path.name}"},
              "rules": {"device_offline": {"check_every_s": 0.2},
                        # Stuck after 3 identical readings for every kind (no per-kind defaults).
                        "stuck_sensor": {"readings": 3, "kind_defaults": {}}}}
    process = CitywatchProcess(tmp_path, config).start()
    yield process
    process.kill()


def open_types(app: CitywatchProcess) -> dict[str, dict[str, Any]]:
    items = app.get("/v1/violations", status="open", limit=100)["items"]
    return {item["type"]: item for item in items}


def test_sanitation_rules_over_mqtt(app, mosquitto_url):
    publisher = MqttPublisher(mosquitto_url, f"test-sanitation-{app.port}").connect()
    now_ms = int(time.time() * 1000)
    hour_ms = 3_600_000
    try:
        def send(device_id: str, kind: str, time_ms: int, **attributes: Any) -> None:
            payload = message(device_id, kind, time_ms, **attributes)
            publisher.publish(f"citywatch/events/{device_id}", payload, wait=True)

        # A bin filling 10 points an hour, by distance (1000 mm deep): 50% .. 85%, then a fire.
        for step, distance in enumerate((500, 400, 300, 200, 150)):
            send("bin-u", "bin", now_ms - 4 * hour_ms + step * hour_ms, distance_mm=distance)
        send("bin-u", "bin", now_ms + 1000, distance_mm=140, temperature_c=71.5)
        for step, (transparency, dissolved_oxygen) in enumerate(((20, 1.5), (8, 0.1), (15, 1.0))):
            send("probe-1", "water", now_ms + step, transparency_cm=transparency, do_mgl=dissolved_oxygen,
                 orp_mv=-100, nh3n_mgl=9)
        for step in range(2):
            send("wc-1", "odour", now_ms + step, nh3_ppm=3.0, h2s_ppm=0.001)
        for step in range(3):
            send("pm-1", "air", now_ms + step, pm25_ugm3=35.0, pm10_ugm3=70.0)

        expected = {"bin_near_full", "bin_fire", "water_black_odour", "toilet_odour", "sensor_stuck",
                    "device_offline"}
        found = wait_for(lambda: expected <= set(open_types(app)) and open_types(app), 20,
                         message=f"violations {sorted(expected)}")
        fire = found["bin_fire"]
        assert fire["device_id"] == "bin-u" and fire["severity"] == "critical"
        assert fire["tags"] == {**TAGS, "department": "sanitation"}
        assert fire["evidence"]["details"]["values"] == [71.5]
        water = found["water_black_odour"]
        assert water["severity"] == "high" and water["evidence"]["details"]["water_body"] == "futian-river"
        assert len(water["evidence"]["event_ids"]) == 3
        assert found["toilet_odour"]["evidence"]["details"]["attribute"] == "nh3_mgm3"
        assert found["device_offline"]["device_id"] == "beacon-1"

        [forecast] = app.get("/v1/bins/predictions")["items"]
        assert forecast["device_id"] == "bin-u" and forecast["fill_pct"] == 86.0
        # 10 points an hour from 85% at now: full about 1.5 h after now.
        assert abs(forecast["predicted_full_time_ms"] - (now_ms + 1.5 * hour_ms)) < 10 * 60_000

        send("beacon-1", "bin", int(time.time() * 1000), battery_pct=90)
        wait_for(lambda: "device_offline" not in open_types(app), 15, message="offline to clear")
        # The third identical air reading completed the stuck run: stored, but not judged further.
        metrics = httpx.get(app.base_url + "/metrics", timeout=5).text
        assert "citywatch_suspect_events_total 1.0" in metrics
    finally:
        publisher.close()
    assert app.stop() == 0


def test_a_broker_outage_does_not_make_devices_offline(mosquitto_factory, mqtt_publisher, tmp_path):
    broker = mosquitto_factory()
    url = f"mqtt://127.0.0.1:{broker.port}"
    config = {"devices": [device("beacon-1", "bin", "sanitation", expected_interval_s=2)],
              "pipeline": {"allowed_lateness_ms": 200},
              "mqtt": {"url": url, "client_id": f"citywatch-{tmp_path.name}", "reconnect_min_s": 0.2,
                       "reconnect_max_s": 1},
              "rules": {"device_offline": {"check_every_s": 0.2}}}
    app = CitywatchProcess(tmp_path, config).start()
    try:
        publisher = mqtt_publisher(url)
        sent = 0

        def beacon() -> None:
            nonlocal sent
            payload = message("beacon-1", "bin", int(time.time() * 1000), battery_pct=90)
            publisher.publish("citywatch/events/beacon-1", payload, qos=1).wait_for_publish(5)
            sent += 1

        def events_stored() -> int:
            return len(app.get("/v1/events", device="beacon-1", limit=1000)["items"])

        beacon()
        wait_for(lambda: events_stored() == 1, 10, message="the first beacon")
        broker.stop()
        wait_for(lambda: _not_ready(app), 10, message="ingest to notice the outage")
        outage_end = time.monotonic() + 8  # longer than 3 x 2 s
        while time.monotonic() < outage_end:
            time.sleep(0.2)  # the outage itself: nothing to wait on
        broker = mosquitto_factory(port=broker.port)
        wait_for(lambda: publisher.is_connected() and _ready(app), 20, message="both clients back")
        beacon()
        wait_for(lambda: events_stored() == 2, 10, message="the beacon after the outage")
        assert app.get("/v1/violations", type="device_offline")["items"] == []
        # The clock does run: silent for 3 intervals now, the beacon is declared offline.
        [offline] = wait_for(lambda: app.get("/v1/violations", type="device_offline")["items"], 15,
                             message="offline after a real silence")
        assert offline["device_id"] == "beacon-1"
    finally:
        app.kill()


def _ready(app: CitywatchProcess) -> bool:
    return httpx.get(app.base_url + "/readyz", timeout=5).status_code == 200


def _not_ready(app: CitywatchProcess) -> bool:
    return not _ready(app)
