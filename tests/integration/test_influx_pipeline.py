"""`citywatch up` with `store.kind: influxdb`: MQTT in, stored in a real InfluxDB, out of the API."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from citywatch.mqtt_publisher import MqttPublisher
from tests.support.influxdb import InfluxServer
from tests.support.process import CitywatchProcess, bins
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def reading(device_id: str, time_ms: int, fill_pct: float) -> bytes:
    return json.dumps(
        {"device_id": device_id, "kind": "bin", "time": time_ms, "attributes": {"fill_pct": fill_pct}}
    ).encode()


def test_violations_flow_into_influxdb_and_out_of_the_api(
    tmp_path: Path, mosquitto_url: str, influx_server: InfluxServer
) -> None:
    database = f"pipeline_{uuid.uuid4().hex[:8]}"
    app = CitywatchProcess(
        tmp_path,
        {
            "devices": bins("bin-a"),
            "pipeline": {"allowed_lateness_ms": 200},
            "mqtt": {"url": mosquitto_url, "client_id": f"citywatch-{tmp_path.name}"},
        },
    )
    config: dict[str, Any] = yaml.safe_load(app.config_path.read_text())
    config["store"].update(
        {
            "kind": "influxdb",
            "influxdb": {"url": influx_server.url, "database": database, "flush_interval_ms": 50},
        }
    )
    app.config_path.write_text(yaml.safe_dump(config))
    app.start()
    publisher = MqttPublisher(mosquitto_url, f"test-{uuid.uuid4().hex[:8]}").connect()
    now_ms = int(time.time() * 1000)
    try:
        publisher.publish("citywatch/events/bin-a", reading("bin-a", now_ms, 93.0), wait=True)
        publisher.publish("citywatch/events/bin-a", reading("bin-a", now_ms + 1000, 97.0), wait=True)
        [opened] = wait_for(
            lambda: app.get("/v1/violations", type="bin_overflow")["items"],
            20,
            message="violation via the API",
        )
        assert opened["device_id"] == "bin-a" and opened["tags"]["grid"] == "FT-11"
        latest = app.get("/v1/readings/latest", kind="bin")["items"]
        assert [(e["device_id"], e["attributes"]["fill_pct"]) for e in latest] == [("bin-a", 97.0)]
        assert app.stop() == 0
    finally:
        publisher.close()
        app.kill()
    stored = influx_server.query(database, 'SELECT count(violation_id) FROM "violations"."violations"')
    assert stored["results"][0]["series"][0]["values"][0][1] == 1  # type: ignore[index]
