"""MQTT publish -> ingest -> rules -> store -> HTTP API, with `citywatch up` as a real process.

Runs once against a real Mosquitto started by the fixture and once with citywatch's own embedded
broker. Nothing is mocked: real sockets, real broker, real SQLite, real HTTP.
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
from tests.support.process import CitywatchProcess, bins, free_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def reading(device_id: str, time_ms: int, fill_pct: float) -> bytes:
    return json.dumps({"device_id": device_id, "kind": "bin", "time": time_ms,
                       "attributes": {"fill_pct": fill_pct}}).encode()


def violations(app: CitywatchProcess, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = app.get("/v1/violations", **params)["items"]
    return items


@pytest.fixture(params=["mosquitto", "embedded"])
def app_and_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[CitywatchProcess, str]]:
    config: dict[str, Any] = {"devices": bins("bin-a", "bin-b"), "pipeline": {"allowed_lateness_ms": 300}}
    if request.param == "mosquitto":
        url = request.getfixturevalue("mosquitto_url")
        config["mqtt"] = {"url": url, "client_id": f"citywatch-{tmp_path.name}"}
    else:
        port = free_port()
        config["mqtt"] = {"embedded_broker": "amqtt", "embedded_port": port}
        url = f"mqtt://127.0.0.1:{port}"
    app = CitywatchProcess(tmp_path, config).start()
    yield app, url
    app.kill()


def test_bin_overflow_is_served_by_the_api_and_clears_when_emptied(app_and_broker):
    app, url = app_and_broker
    publisher = MqttPublisher(url, "test-e2e-publisher").connect()
    now_ms = int(time.time() * 1000)
    try:
        publisher.publish("citywatch/events/bin-a", reading("bin-a", now_ms, 93.0), wait=True)
        publisher.publish("citywatch/events/bin-a", reading("bin-a", now_ms + 1000, 96.5), wait=True)
        publisher.publish("citywatch/events/bin-b", reading("bin-b", now_ms, 40.0), wait=True)
        [opened] = wait_for(lambda: violations(app, type="bin_overflow"), 15, message="violation via API")
        assert opened["device_id"] == "bin-a" and opened["status"] == "open"
        assert opened["start_time_ms"] == now_ms
        assert opened["evidence"]["details"]["fill_pct"] == [93.0, 96.5]
        assert opened["tags"]["department"] == "sanitation"
        assert opened["location"] == {"lat": 22.54, "lon": 114.05}

        publisher.publish("citywatch/events/bin-a", reading("bin-a", now_ms + 2000, 4.0), wait=True)
        [cleared] = wait_for(lambda: violations(app, status="cleared"), 15, message="cleared violation")
        assert cleared["violation_id"] == opened["violation_id"]
        assert cleared["end_time_ms"] == now_ms + 2000
        assert violations(app, status="open") == []
    finally:
        publisher.close()
    assert app.stop() == 0


def test_bad_input_is_dead_lettered_with_a_reason_and_the_pipeline_goes_on(app_and_broker):
    app, url = app_and_broker
    publisher = MqttPublisher(url, "test-e2e-bad-input").connect()
    now_ms = int(time.time() * 1000)
    try:
        publisher.publish("citywatch/events/bin-a", b'{"device_id": "bin-a", "kind": ', wait=True)
        publisher.publish("citywatch/events/ghost", reading("ghost", now_ms, 99.0), wait=True)
        wrong_type = reading("bin-b", now_ms, 0).replace(b'"fill_pct": 0', b'"fill_pct": "full"')
        publisher.publish("citywatch/events/bin-b", wrong_type, wait=True)
        for i in range(2):
            publisher.publish("citywatch/events/bin-b", reading("bin-b", now_ms + i, 97.0), wait=True)
        wait_for(lambda: violations(app, device="bin-b"), 15, message="violation after bad input")
        summary = wait_for(lambda: app.get("/v1/dead-letters/summary")["by_reason"], 10)
        assert summary == {"malformed_json": 1, "unknown_device": 1, "invalid_field": 1}
        letters = app.get("/v1/dead-letters", reason="unknown_device")["items"]
        assert "ghost" in letters[0]["detail"]
        metrics = wait_for(lambda: "malformed_json" in (text := _metrics(app)) and text, 5)
        assert 'citywatch_dead_letters_total{reason="malformed_json"} 1.0' in metrics
    finally:
        publisher.close()


def _metrics(app: CitywatchProcess) -> str:
    return httpx.get(app.base_url + "/metrics", timeout=5).text


def test_clean_stop_loses_nothing_and_state_survives_a_restart(mosquitto_url, tmp_path):
    config = {"devices": bins("bin-a"), "pipeline": {"allowed_lateness_ms": 300},
              "mqtt": {"url": mosquitto_url, "client_id": f"citywatch-{tmp_path.name}"}}
    app = CitywatchProcess(tmp_path, config).start()
    publisher = MqttPublisher(mosquitto_url, "test-e2e-restart").connect()
    start_ms = int(time.time() * 1000) - 10_000
    try:
        count = 2000
        infos = [publisher.publish("citywatch/events/bin-a",
                                   reading("bin-a", start_ms + i, 95.0 if i >= count - 2 else 50.0))
                 for i in range(count)]
        for info in infos:
            info.wait_for_publish(10)

        def received() -> bool:
            return f"citywatch_mqtt_messages_received_total {count}.0" in _metrics(app)

        wait_for(received, 20, message="ingest to receive every message")
        assert app.stop() == 0  # straight after receipt: whatever is still queued must be drained

        app.start()
        stored = _count_events(app)
        assert stored == count
        [opened] = violations(app, type="bin_overflow")  # the jump to 95% also raises bin_near_full
        publisher.publish("citywatch/events/bin-a", reading("bin-a", start_ms + count, 5.0), wait=True)
        [cleared] = wait_for(lambda: violations(app, status="cleared", type="bin_overflow"), 15,
                             message="clear after restart")
        assert cleared["violation_id"] == opened["violation_id"]
    finally:
        publisher.close()
        app.kill()


def _count_events(app: CitywatchProcess) -> int:
    total, cursor = 0, None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = app.get("/v1/events", **params)
        total += len(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return total
