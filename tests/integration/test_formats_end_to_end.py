"""Each device format from an MQTT publish on a real Mosquitto to a stored, normalised, tagged event.

One in-process embedded runtime (real paho client, real bus, real rules, real SQLite) subscribes with the
shipped codec routes, vendor maps and grids under a topic prefix of its own; fixtures from tests/data are
published with their times moved to now (the codecs refuse times more than a day ahead of the clock).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from api.app import create_app
from api.services import ApiServices
from citywatch.mqtt_publisher import MqttPublisher
from citywatch.runtime import EmbeddedRuntime
from core.models import Event, Violation
from core.settings import DeviceSettings, Settings, load_settings
from store.base import DeadLetterQuery, EventQuery, ViolationQuery
from tests.support.formats import DATA, REPO, SCHEMAS, fixture_devices
from tests.support.served_app import served
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

PREFIX = f"e2e-{uuid.uuid4().hex[:8]}"
ROUTES = [
    {"pattern": f"{PREFIX}/frigate/events", "codec": "frigate", "media_base_url": "http://nvr.local:5000"},
    {"pattern": f"{PREFIX}/v3/+/devices/+/up", "codec": "tts"},
    {"pattern": f"{PREFIX}/application/+/device/+/event/up", "codec": "chirpstack"},
    {"pattern": f"{PREFIX}/senml/#", "codec": "senml"},
    {"pattern": f"{PREFIX}/signal/#", "codec": "signal"},
    {"pattern": f"{PREFIX}/detector/#", "codec": "detector"},
    {"pattern": f"{PREFIX}/camera-violations/#", "codec": "camera_violation"},
]
FILL_BIN = DeviceSettings(
    device_id="fill-bin-1", kind="bin", model="Generic fill fraction", lat=22.5511, lon=114.0755
)


@pytest.fixture(scope="module")
def runtime(mosquitto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRuntime]:
    shipped = load_settings(REPO / "configs" / "citywatch.yaml")
    settings = Settings.model_validate(
        {
            "mqtt": {"url": mosquitto_url, "client_id": f"citywatch-{PREFIX}"},
            "store": {"data_dir": str(tmp_path_factory.mktemp("formats-e2e"))},
            "ingest": {"routes": ROUTES},
            "pipeline": {"allowed_lateness_ms": 100},
            "devices": [d.model_dump() for d in [*fixture_devices(), FILL_BIN]],
            "vendor_maps": {name: m.model_dump() for name, m in shipped.vendor_maps.items()},
            "geo": shipped.geo.model_dump(),
        }
    )
    app = EmbeddedRuntime(settings)
    app.start()
    wait_for(lambda: app.ingest is not None and app.ingest.subscribed, 15, message="ingest subscribed")
    yield app
    app.stop()


@pytest.fixture(scope="module")
def publisher(mosquitto_url: str) -> Iterator[MqttPublisher]:
    client = MqttPublisher(mosquitto_url, f"test-{PREFIX}").connect()
    yield client
    client.close()


def now_s() -> float:
    return time.time()


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def fixture(name: str, path: str) -> Any:
    return json.loads((DATA / name / path).read_text())


def stored(runtime: EmbeddedRuntime, device_id: str, count: int = 1) -> list[Event]:
    def found() -> list[Event]:
        items = runtime.store.query_events(EventQuery(device_id=device_id, limit=100)).items
        return items if len(items) >= count else []

    return wait_for(found, 15, message=f"{count} stored events of {device_id}")


def publish(publisher: MqttPublisher, topic: str, body: Any) -> None:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    publisher.publish(f"{PREFIX}/{topic}", payload, wait=True)


def test_frigate_track_event(runtime: EmbeddedRuntime, publisher: MqttPublisher) -> None:
    message = fixture("frigate", "valid/v016_update_plate_speed.json")
    message["after"]["frame_time"] = now_s()
    publish(publisher, "frigate/events", message)
    [event] = stored(runtime, "shennan-fuhua-north")
    assert event.kind == "track" and event.source == "frigate"
    assert event.attributes["plate"] == "粤B6K8Q2" and event.attributes["speed_kmh"] == 42.7
    assert event.attributes["snapshot_url"].startswith("http://nvr.local:5000/api/events/")
    # Position from the registry, place and department from the grids and the routing table.
    assert event.location is not None
    assert event.tags["district"] == "futian" and event.tags["department"] == "traffic_police"
    assert event.tags["grid"].startswith("FT-")


def test_the_things_stack_uplinks_through_vendor_maps(
    runtime: EmbeddedRuntime, publisher: MqttPublisher
) -> None:
    milesight = fixture("tts", "valid/em310_udl_uplink.json")
    milesight["uplink_message"]["received_at"] = iso(now_s())
    publish(publisher, "v3/futian-bins@ttn/devices/em310-bin-0042/up", milesight)
    dragino = fixture("tts", "valid/ldds75_uplink.json")
    dragino["uplink_message"]["received_at"] = iso(now_s())
    publish(publisher, "v3/futian-bins@ttn/devices/ldds75-bin-0007/up", dragino)
    [em310] = stored(runtime, "em310-bin-0042")
    assert em310.source == "tts" and em310.kind == "bin" and em310.attributes["distance_mm"] == 2116
    assert em310.tags == {"grid": "FT-23", "district": "futian", "department": "sanitation"}
    [ldds75] = stored(runtime, "ldds75-bin-0007")
    assert ldds75.attributes["distance_mm"] == 1234 and ldds75.attributes["battery_v"] == 3.42


def test_chirpstack_v4_and_v3_uplinks(runtime: EmbeddedRuntime, publisher: MqttPublisher) -> None:
    v4 = fixture("chirpstack", "valid/v4_em310_up.json")
    v4["deviceInfo"]["deviceName"] = "air-ft-0009"  # a device of its own, so this test sees only its events
    v4["object"] = {"pm25": 12}
    v4["time"] = iso(now_s())
    publish(publisher, "application/17c82e96/device/24e124713c123456/event/up", v4)
    v3 = fixture("chirpstack", "valid/v3_json_v3_object.json")
    v3["deviceName"] = "water-ft-0002"
    v3["rxInfo"][0]["time"] = iso(now_s() + 0.5)
    publish(publisher, "application/12/device/a84041000181c8e1/event/up", v3)
    [air] = stored(runtime, "air-ft-0009")
    assert air.event_id == "3ac7e3c4-4401-4b8d-9386-a5c902f9202d" and air.attributes["pm25"] == 12
    assert air.source == "chirpstack" and air.tags["department"] == "environment"
    [water] = stored(runtime, "water-ft-0002")
    assert water.attributes["Distance"] == "1187 mm"  # no vendor map for this device's model: kept raw


def test_senml_pack(runtime: EmbeddedRuntime, publisher: MqttPublisher) -> None:
    publish(
        publisher,
        "senml/odour",
        [
            {"bn": "odour-ft-0003/", "n": "nh3", "u": "ppm", "v": 1.8, "t": -5},
            {"n": "h2s", "u": "ppm", "v": 0.06, "t": -5},
        ],
    )
    [event] = stored(runtime, "odour-ft-0003")
    assert event.kind == "odour" and event.attributes == {"nh3_ppm": 1.8, "h2s_ppm": 0.06}
    assert event.tags["department"] == "sanitation"


def test_signal_detector_and_camera_violation_messages(
    runtime: EmbeddedRuntime, publisher: MqttPublisher
) -> None:
    now_ms = int(now_s() * 1000)
    for kind, topic in (
        ("signal", "signal/sig-0001"),
        ("detector", "detector/det-0003"),
        ("camera_violation", "camera-violations/epolice-0001"),
    ):
        message = json.loads((SCHEMAS / "examples" / f"{kind}.json").read_text())
        message["time"] = now_ms
        if kind == "signal":
            message["changes"][1]["time"] = now_ms + 400
        publish(publisher, topic, message)
    changes = stored(runtime, "sig-0001", count=2)
    assert sorted(e.attributes["phase"] for e in changes) == ["north_through", "ped_north"]
    [counts] = stored(runtime, "det-0003")
    assert counts.attributes["flow_veh_h"] == 840 and counts.tags["department"] == "traffic_police"
    [judged] = stored(runtime, "epolice-0001")
    assert judged.event_id == "epolice-0001-20261126-000123" and judged.attributes["plate"] == "粤B12345"


def test_violations_are_tagged_with_grid_district_and_department(
    runtime: EmbeddedRuntime, publisher: MqttPublisher
) -> None:
    for offset, fill in ((0, 0.95), (1, 0.97)):
        publish(
            publisher,
            "v3/futian-bins@ttn/devices/fill-bin-1/up",
            {
                "end_device_ids": {"device_id": "fill-bin-1"},
                "uplink_message": {
                    "f_port": 1,
                    "f_cnt": 100 + offset,
                    "received_at": iso(now_s() + offset),
                    "decoded_payload": {"fill": fill, "battery": 80},
                },
            },
        )

    def opened() -> list[Violation]:
        return runtime.store.query_violations(ViolationQuery(device_ids=("fill-bin-1",))).items

    [violation] = wait_for(opened, 15, message="bin_overflow violation of fill-bin-1")
    assert violation.type == "bin_overflow" and violation.evidence.details["fill_pct"] == [95, 97]
    assert violation.tags == {"grid": "FT-34", "district": "futian", "department": "sanitation"}


def test_bad_input_of_every_format_is_dead_lettered_with_the_codec_and_the_field(
    runtime: EmbeddedRuntime, publisher: MqttPublisher
) -> None:
    bad = {
        "frigate": ("frigate/events", "invalid/box_three_numbers.json", "after.box"),
        "tts": (
            "v3/a@ttn/devices/ldds75-bin-0007/up",
            "invalid/ldds75_invalid_reading.json",
            "uplink_message.decoded_payload.Distance",
        ),
        "chirpstack": (
            "application/1/device/24e124713c123456/event/up",
            "invalid/v4_bad_dev_eui.json",
            "deviceInfo.devEui",
        ),
        "senml": ("senml/x", "invalid/must_understand_field.json", "[0].rt_"),
        "signal": ("signal/sig-0001", "invalid/unknown_state.json", "changes[0].state"),
        "detector": ("detector/det-0003", "invalid/occupancy_over_100.json", "occupancy_pct"),
        "camera_violation": ("camera-violations/epolice-0001", "invalid/missing_code.json", "violation_code"),
    }
    for name, (topic, path, _) in bad.items():
        publish(publisher, topic, (DATA / name / path).read_bytes())
    publish(publisher, "senml/ghost", b'[{"n": "pm25", "u": "ug/m3", "v": 3}]')

    def letters() -> dict[str, Any]:
        items = runtime.store.query_dead_letters(DeadLetterQuery(limit=1000)).items
        mine = {letter.source: letter for letter in items if letter.topic.startswith(PREFIX)}
        return mine if set(bad) <= set(mine) else {}

    found = wait_for(letters, 15, message="a dead letter from every codec")
    for name, (_, _, field) in bad.items():
        assert found[name].detail.startswith(field), (name, found[name].detail)
    unknown = wait_for(
        lambda: runtime.store.query_dead_letters(DeadLetterQuery(reason="unknown_device")).items,
        15,
        message="unknown device dead letter",
    )
    assert any("'ghost'" in letter.detail for letter in unknown)


def test_a_device_deactivated_through_the_registry_is_dead_lettered_at_once(
    runtime: EmbeddedRuntime, publisher: MqttPublisher
) -> None:
    runtime.devices.create(DeviceSettings(device_id="temp-cam", kind="track"))
    message = fixture("frigate", "edge/minimal_after_only.json")
    message["after"]["camera"] = "temp-cam"
    message["after"]["frame_time"] = now_s()
    publish(publisher, "frigate/events", message)
    stored(runtime, "temp-cam")
    runtime.devices.deactivate("temp-cam")
    message["after"]["frame_time"] = now_s() + 1
    publish(publisher, "frigate/events", message)
    inactive = wait_for(
        lambda: runtime.store.query_dead_letters(DeadLetterQuery(reason="inactive_device")).items,
        15,
        message="inactive device dead letter",
    )
    assert any("'temp-cam'" in letter.detail for letter in inactive)


def test_stored_vendor_events_and_dead_letters_are_served_by_the_api(
    runtime: EmbeddedRuntime, publisher: MqttPublisher
) -> None:
    message = fixture("tts", "valid/ldds75_uplink.json")
    message["end_device_ids"]["device_id"] = "bin-0101"
    # A new uplink has a new correlation id (the fixture's was stored by another test: a duplicate).
    message["correlation_ids"] = [f"as:up:{uuid.uuid4().hex}"]
    message["uplink_message"]["received_at"] = iso(now_s())
    publish(publisher, "v3/futian-bins@ttn/devices/bin-0101/up", message)
    invalid = DATA / "detector" / "invalid/occupancy_over_100.json"
    publish(publisher, "detector/det-0003", invalid.read_bytes())
    stored(runtime, "bin-0101")
    wait_for(lambda: runtime.store.query_dead_letters(DeadLetterQuery(reason="invalid_field")).items, 15,
             message="the invalid detector message dead-lettered")
    services = ApiServices(store=runtime.store, metrics=runtime.metrics, devices=runtime.devices)
    with served(create_app(services)) as api:
        [event] = api.get("/v1/events", params={"device": "bin-0101"}).json()["items"]
        assert event["source"] == "tts" and event["attributes"]["Distance"] == "1234 mm"  # no model: raw
        assert event["tags"] == {"grid": "FT-22", "district": "futian", "department": "sanitation"}
        assert api.get("/v1/devices/bin-0101").json()["kind"] == "bin"
        summary = api.get("/v1/dead-letters/summary").json()["by_reason"]
        assert summary.get("invalid_field", 0) >= 1
