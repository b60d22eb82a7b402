"""`citywatch up` with keys required: a bin overflows on MQTT, a dispatcher acknowledges it with a key, the
bin is emptied; the violation's history shows opened -> acknowledged -> cleared, and when it was detected
is still there once it cleared (real processes, broker, HTTP)."""

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
from tests.support.process import REPO, CitywatchProcess, bins
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def reading(time_ms: int, fill_pct: float) -> bytes:
    return json.dumps({"device_id": "bin-a", "kind": "bin", "time": time_ms,
                       "attributes": {"fill_pct": fill_pct}}).encode()


def create_key(config: Path, name: str, scopes: str) -> tuple[str, str]:
    """The token and key id `citywatch keys create` printed."""
    out = subprocess.run([sys.executable, "-m", "citywatch.cli", "keys", "--config", str(config), "create",
                          "--name", name, "--scopes", scopes], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout
    token = out.split("token (shown once, only its hash is stored): ")[1].strip()
    return token, token.split("_")[1]


def test_opened_acknowledged_cleared_with_the_detection_time_kept(tmp_path: Path, mosquitto_url: str) -> None:
    config: dict[str, Any] = {
        "devices": bins("bin-a"), "pipeline": {"allowed_lateness_ms": 300},
        "mqtt": {"url": mosquitto_url, "client_id": f"citywatch-{tmp_path.name}"},
        "api": {"auth": "required"},
    }
    app = CitywatchProcess(tmp_path, config)
    dispatcher, dispatcher_id = create_key(app.config_path, "dispatch-desk",
                                           "violations:read,violations:write")
    reader, _ = create_key(app.config_path, "wallboard", "violations:read")
    app.start()
    as_dispatcher = {"Authorization": f"Bearer {dispatcher}"}
    publisher = MqttPublisher(mosquitto_url, f"test-lifecycle-{tmp_path.name}").connect()
    streamed: list[dict[str, Any]] = []

    def listen() -> None:
        with httpx.stream("GET", app.base_url + "/v1/stream/violations", params={"since": "earliest"},
                          headers=as_dispatcher, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    streamed.append(json.loads(line[6:]))
                    return

    try:
        # Readings from the last seconds: event time and the wall time of people's actions then agree.
        first_ms = int(time.time() * 1000) - 3000
        publisher.publish("citywatch/events/bin-a", reading(first_ms, 93.0), wait=True)
        publisher.publish("citywatch/events/bin-a", reading(first_ms + 1000, 96.5), wait=True)

        def violations() -> list[dict[str, Any]]:
            answer = httpx.get(app.base_url + "/v1/violations", headers=as_dispatcher, timeout=10)
            items: list[dict[str, Any]] = answer.json()["items"]
            return items

        [opened] = wait_for(violations, 20, message="the opened violation via the API")
        violation_id = opened["violation_id"]
        # Began with the first full reading, decided on the second (two in a row).
        assert (opened["start_time_ms"], opened["detected_time_ms"]) == (first_ms, first_ms + 1000)
        assert opened["handling"]["acknowledged_by"] is None
        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        [change] = wait_for(lambda: streamed, 20, message="the opened change on the SSE stream")
        assert change["violation"]["detected_time_ms"] == first_ms + 1000

        actions = f"{app.base_url}/v1/violations/{violation_id}/actions"
        refused = httpx.post(actions, json={"action": "acknowledge"}, timeout=10,
                             headers={"Authorization": f"Bearer {reader}"})
        assert refused.status_code == 403
        acknowledged = httpx.post(actions, json={"action": "acknowledge", "note": "crew informed"},
                                  headers=as_dispatcher, timeout=10)
        assert acknowledged.status_code == 201, acknowledged.text

        # Emptied after the acknowledgement (event time from the same clock, later).
        publisher.publish("citywatch/events/bin-a", reading(int(time.time() * 1000) + 1, 4.0), wait=True)

        def cleared() -> dict[str, Any] | None:
            [violation] = violations()
            return violation if violation["status"] == "cleared" else None

        violation = wait_for(cleared, 20, message="the cleared violation via the API")
        assert violation["detected_time_ms"] == first_ms + 1000
        assert violation["handling"]["acknowledged_by"] == f"key:{dispatcher_id}"

        history = httpx.get(f"{app.base_url}/v1/violations/{violation_id}/history", headers=as_dispatcher,
                            timeout=10).json()
        assert [(e["change"], e["actor"]) for e in history["entries"]] == [
            ("opened", "rule:bin_overflow"), ("acknowledged", f"key:{dispatcher_id}"),
            ("cleared", "rule:bin_overflow")]
        opened_entry, acknowledged_entry, cleared_entry = history["entries"]
        assert opened_entry["time_ms"] == first_ms + 1000
        assert (acknowledged_entry["actor_name"], acknowledged_entry["note"]) == ("dispatch-desk",
                                                                                  "crew informed")
        assert cleared_entry["time_ms"] == violation["updated_time_ms"]
        assert app.stop() == 0
    finally:
        publisher.close()
        app.kill()
