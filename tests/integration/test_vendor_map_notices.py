"""What a vendor map leaves out is visible on a running citywatch: in /metrics and in its log.

One embedded runtime on a real Mosquitto with the shipped vendor maps; The Things Stack uplinks from a
device whose map does not consume every decoded field, and from a device whose model names no map.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from citywatch.mqtt_publisher import MqttPublisher
from citywatch.runtime import EmbeddedRuntime
from core.models import Event
from core.settings import Settings, load_settings
from store.base import EventQuery
from tests.support.formats import DATA, REPO
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

PREFIX = f"notices-{uuid.uuid4().hex[:8]}"
DEVICES = [
    {"device_id": "bin-known", "kind": "bin", "model": "dragino ldds75", "install": {"bin_depth_mm": 1100}},
    {"device_id": "bin-unknown", "kind": "bin", "model": "Acme Sonar 9"},
]


@pytest.fixture
def runtime(mosquitto_url: str, tmp_path: Path) -> Iterator[EmbeddedRuntime]:
    """Started and stopped around the test, not in set-up: ingest runs in a process of its own
    (citywatch/ingest_process.py) that logs onto the standard error it starts with, the one `capfd`
    reads during the test."""
    shipped = load_settings(REPO / "configs" / "citywatch.yaml")
    settings = Settings.model_validate(
        {
            "mqtt": {"url": mosquitto_url, "client_id": f"citywatch-{PREFIX}"},
            "store": {"data_dir": str(tmp_path)},
            "ingest": {"routes": [{"pattern": f"{PREFIX}/v3/+/devices/+/up", "codec": "tts"}]},
            "devices": DEVICES,
            "vendor_maps": {name: m.model_dump() for name, m in shipped.vendor_maps.items()},
        }
    )
    app = EmbeddedRuntime(settings)
    yield app
    app.stop()


def uplink(device_id: str, decoded: dict[str, object]) -> bytes:
    body = json.loads((DATA / "tts" / "valid" / "ldds75_uplink.json").read_text(encoding="utf-8"))
    body["end_device_ids"]["device_id"] = device_id
    body["correlation_ids"] = [f"as:up:{uuid.uuid4().hex}"]  # the event id: one per uplink
    body["uplink_message"]["decoded_payload"] = decoded
    body["uplink_message"]["received_at"] = datetime.fromtimestamp(time.time(), UTC).isoformat()
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def publisher(mosquitto_url: str) -> Iterator[MqttPublisher]:
    client = MqttPublisher(mosquitto_url, f"test-{PREFIX}").connect()
    yield client
    client.close()


def test_unmapped_fields_and_models_without_a_map_reach_metrics_and_the_log(
    runtime: EmbeddedRuntime, publisher: MqttPublisher, capfd: pytest.CaptureFixture[str]
) -> None:
    runtime.start()
    wait_for(lambda: runtime.ingest is not None and runtime.ingest.subscribed, 15,
             message="ingest subscribed")
    for device_id, decoded in (
        ("bin-known", {"Distance": "900 mm", "Bat": "3.3 V", "Bat_status": 3}),
        ("bin-known", {"Distance": "910 mm", "Bat": "3.3 V", "Bat_status": 3}),
        ("bin-unknown", {"level": 4}),
    ):
        publisher.publish(
            f"{PREFIX}/v3/app@ttn/devices/{device_id}/up", uplink(device_id, decoded), wait=True
        )

    def sample(name: str, **labels: str) -> float:
        return runtime.metrics.registry.get_sample_value(name, labels) or 0.0

    wait_for(
        lambda: (
            sample("citywatch_uplinks_without_vendor_map_total", model="Acme Sonar 9") == 1
            and sample("citywatch_unmapped_fields_total", model="dragino ldds75", field="Bat_status") == 2
        ),
        15,
        message="the notices counted",
    )

    def events_of(device_id: str, count: int) -> list[Event]:
        items = runtime.store.query_events(EventQuery(device_id=device_id, limit=10)).items
        return items if len(items) == count else []

    known = wait_for(lambda: events_of("bin-known", 2), 15, message="both readings stored")
    assert sorted(event.attributes["distance_mm"] for event in known) == [900, 910]
    assert all("Bat_status" not in event.attributes for event in known)
    [raw] = wait_for(lambda: events_of("bin-unknown", 1), 15, message="the unconverted event")
    assert raw.attributes["level"] == 4
    logger = "ingest.vendor_maps: "  # the log's text format: time, level, logger, message
    notices = [line.split(logger, 1)[1] for line in capfd.readouterr().err.splitlines() if logger in line]
    assert [m.split(":")[0] for m in notices] == [
        "decoded field 'Bat_status' of model 'dragino ldds75' is not in vendor map 'Dragino LDDS75'",
        "device model 'Acme Sonar 9' names no vendor map",
    ]
