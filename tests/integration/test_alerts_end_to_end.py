"""`citywatch up` with keys required: a bin overflows on MQTT, and the change reaches an SSE client,
a webhook receiver and the MQTT output topic, all from the running pipeline (real processes, broker,
HTTP)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from citywatch.mqtt_publisher import MqttPublisher
from tests.conftest import connect_client
from tests.support.process import REPO, CitywatchProcess, bins
from tests.support.servers import Receiver
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def reading(device_id: str, time_ms: int, fill_pct: float) -> bytes:
    return json.dumps({"device_id": device_id, "kind": "bin", "time": time_ms,
                       "attributes": {"fill_pct": fill_pct}}).encode()


def create_key(config: Path, scopes: str) -> str:
    out = subprocess.run([sys.executable, "-m", "citywatch.cli", "keys", "--config", str(config), "create",
                          "--name", "test", "--scopes", scopes], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout
    return out.split("token (shown once, only its hash is stored): ")[1].strip()


def test_a_violation_change_reaches_streams_webhooks_and_the_mqtt_topic(tmp_path, mosquitto_url) -> None:
    config: dict[str, Any] = {
        "devices": bins("bin-a"), "pipeline": {"allowed_lateness_ms": 300},
        "mqtt": {"url": mosquitto_url, "client_id": f"citywatch-{tmp_path.name}"},
        "api": {"auth": "required"},
        "alerts": {"mqtt": {"enabled": True, "topic_prefix": f"{tmp_path.name}/violations"},
                   "webhooks": {"allowed_private_networks": ["127.0.0.0/8"]}},  # the receiver is local
    }
    app = CitywatchProcess(tmp_path, config)
    token = create_key(app.config_path, "violations:read,subscriptions:manage")
    app.start()
    headers = {"Authorization": f"Bearer {token}"}
    receiver = Receiver().start()
    topic_messages: list[tuple[str, bytes]] = []
    subscriber = connect_client(mosquitto_url)
    subscriber.on_message = lambda client, userdata, message: topic_messages.append(
        (message.topic, message.payload))
    subscriber.subscribe(f"{tmp_path.name}/violations/#", qos=1)
    try:
        assert httpx.get(app.base_url + "/v1/violations", timeout=10).status_code == 401
        created = httpx.post(app.base_url + "/v1/subscriptions", json={"url": receiver.url}, headers=headers,
                             timeout=10)
        assert created.status_code == 201
        streamed: list[dict[str, Any]] = []

        def listen() -> None:
            with httpx.stream("GET", app.base_url + "/v1/stream/violations", params={"since": "earliest"},
                              headers=headers, timeout=30) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        streamed.append(json.loads(line[6:]))
                        return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        publisher = MqttPublisher(mosquitto_url, f"test-alerts-{tmp_path.name}").connect()
        now_ms = int(time.time() * 1000)
        for offset, fill in ((0, 93.0), (1000, 96.0), (2000, 97.0)):
            publisher.publish("citywatch/events/bin-a", reading("bin-a", now_ms + offset, fill), wait=True)
        publisher.close()

        wait_for(lambda: streamed, 20, message="the change on the SSE stream")
        [change] = streamed
        assert change["change"] == "opened" and change["violation"]["device_id"] == "bin-a"
        [delivery] = wait_for(receiver.received, 20, message="the webhook delivery")
        assert delivery.json()["idempotency_key"] == change["idempotency_key"]
        [(topic, payload)] = wait_for(lambda: topic_messages, 20, message="the MQTT output message")
        assert topic == f"{tmp_path.name}/violations/bin_overflow/FT-11"
        assert json.loads(payload)["idempotency_key"] == change["idempotency_key"]
        assert app.stop() == 0
    finally:
        app.kill()
        receiver.stop()
        subscriber.disconnect()
        subscriber.loop_stop()
