"""The managed device registry: persisted in SQLite or PostgreSQL (each test on both), seeded from
configs/, changed through /v1/devices, and seen by ingest at once (an inactive device's messages are
dead-lettered)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.services import ApiServices
from core.metrics import Metrics
from core.settings import DeviceSettings, IngestSettings, RelationalSettings, TopicRoute
from ingest.codecs.catalogue import build_codec
from ingest.device_admin import DeviceManager
from ingest.normalizer import Normalizer
from ingest.registry import DeviceRegistry
from store.sqlite_store import SqliteStore
from tests.support.served_app import served

RECEIVED_MS = 1_795_669_205_000
CONFIG = [
    DeviceSettings(
        device_id="bin-1",
        kind="bin",
        model="Milesight EM310-UDL",
        lat=22.54,
        lon=114.05,
        install={"bin_depth_mm": 1200},
    )
]


@pytest.fixture
def manager(tmp_path: Path, relational: RelationalSettings) -> Iterator[DeviceManager]:
    opened = DeviceManager.open(tmp_path, DeviceRegistry(), CONFIG, relational=relational)
    yield opened
    opened.close()


@pytest.fixture
def client(tmp_path: Path, manager: DeviceManager) -> Iterator[httpx.Client]:
    store = SqliteStore.in_directory(tmp_path / "store")
    with served(create_app(ApiServices(store=store, metrics=Metrics(), devices=manager))) as test_client:
        yield test_client
    store.close()


def test_list_get_create_update_deactivate(client: httpx.Client) -> None:
    assert [d["device_id"] for d in client.get("/v1/devices").json()["items"]] == ["bin-1"]
    assert client.get("/v1/devices/bin-1").json()["install"] == {"bin_depth_mm": 1200}
    assert client.get("/v1/devices/nope").status_code == 404

    created = client.post(
        "/v1/devices",
        json={"device_id": "cam-1", "kind": "track", "lat": 22.53, "lon": 114.05, "expected_interval_s": 60},
    )
    assert created.status_code == 201 and created.json()["active"] is True
    assert client.post("/v1/devices", json={"device_id": "cam-1", "kind": "track"}).status_code == 409

    patched = client.patch(
        "/v1/devices/bin-1", json={"thresholds": {"bin_overflow": {"open_pct": 80}}, "model": None}
    )
    assert patched.status_code == 200
    assert (
        patched.json()["thresholds"] == {"bin_overflow": {"open_pct": 80}} and patched.json()["model"] is None
    )
    assert patched.json()["install"] == {"bin_depth_mm": 1200}  # untouched fields stay

    deactivated = client.delete("/v1/devices/cam-1")
    assert deactivated.status_code == 200 and deactivated.json()["active"] is False
    assert [
        d["device_id"] for d in client.get("/v1/devices", params={"active": "false"}).json()["items"]
    ] == ["cam-1"]
    assert [d["device_id"] for d in client.get("/v1/devices", params={"kind": "bin"}).json()["items"]] == [
        "bin-1"
    ]
    assert client.delete("/v1/devices/nope").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"device_id": "x", "kind": "bin", "lat": 91}, "lat"),
        ({"device_id": "x", "kind": "bin", "colour": "red"}, "colour"),
        ({"device_id": "", "kind": "bin"}, "device_id"),
        ({"kind": "bin"}, "device_id"),
    ],
)
def test_create_rejects_what_the_configuration_rejects(client: httpx.Client, body: dict[str, object],
                                                       field: str) -> None:
    response = client.post("/v1/devices", json=body)
    assert response.status_code == 422
    assert [(e["location"], e["field"]) for e in response.json()["errors"]] == [("body", field)]


def test_unknown_device_fields_are_refused_with_the_closest_name(client: httpx.Client) -> None:
    created = client.post("/v1/devices", json={"device_id": "x", "kind": "bin", "expected_intervl_s": 60})
    [error] = created.json()["errors"]
    assert (error["field"], error["closest"]) == ("expected_intervl_s", "expected_interval_s")
    assert error["message"] == "unknown field; did you mean `expected_interval_s`?"
    changed = client.patch("/v1/devices/bin-1", json={"activ": False})
    assert [(e["location"], e["field"], e["closest"]) for e in changed.json()["errors"]] == [
        ("body", "activ", "active")]
    assert client.get("/v1/devices/bin-1").json()["active"] is True


def test_update_rejects_unknown_and_invalid_fields(client: httpx.Client) -> None:
    for body, field in (({"device_id": "other"}, "device_id"), ({"lon": 500}, "lon"),
                        ({"kind": None}, "kind")):
        response = client.patch("/v1/devices/bin-1", json=body)
        assert response.status_code == 422
        assert [(e["location"], e["field"]) for e in response.json()["errors"]] == [("body", field)]
    missing = client.patch("/v1/devices/nope", json={"active": False})
    assert missing.status_code == 404 and missing.json()["detail"] == "no device 'nope'"


def test_changes_persist_and_the_configuration_does_not_overwrite_them(
    tmp_path: Path, manager: DeviceManager, relational: RelationalSettings
) -> None:
    manager.update("bin-1", {"lat": 22.55})
    manager.create(DeviceSettings(device_id="air-9", kind="air"))
    manager.close()
    registry = DeviceRegistry()
    changed_config = [
        DeviceSettings(device_id="bin-1", kind="bin", lat=1.0, lon=1.0),
        DeviceSettings(device_id="det-1", kind="detector"),
    ]
    reopened = DeviceManager.open(tmp_path, registry, changed_config, relational=relational)
    try:
        bin_1 = reopened.get("bin-1")
        assert bin_1 is not None and bin_1.lat == 22.55  # the API's change wins over the config
        assert {d.device_id for d in reopened.list()} == {"bin-1", "air-9", "det-1"}
        assert registry.get("air-9") is not None and registry.get("det-1") is not None
    finally:
        reopened.close()


def test_a_config_device_follows_the_configuration_until_the_api_changes_it(
    tmp_path: Path, relational: RelationalSettings
) -> None:
    first = DeviceManager.open(tmp_path, DeviceRegistry(), CONFIG, relational=relational)
    first.close()
    moved = [DeviceSettings(device_id="bin-1", kind="bin", lat=22.6, lon=114.1)]
    second = DeviceManager.open(tmp_path, DeviceRegistry(), moved, relational=relational)
    try:
        device = second.get("bin-1")
        assert device is not None and device.lat == 22.6
    finally:
        second.close()


def test_a_device_removed_from_the_configuration_is_deactivated(
    tmp_path: Path, relational: RelationalSettings
) -> None:
    DeviceManager.open(tmp_path, DeviceRegistry(), CONFIG, relational=relational).close()
    registry = DeviceRegistry()
    reopened = DeviceManager.open(tmp_path, registry, [], relational=relational)
    try:
        device = registry.get("bin-1")
        assert device is not None and device.active is False
    finally:
        reopened.close()


def test_ingest_sees_registry_changes_with_the_next_message(manager: DeviceManager) -> None:
    registry = DeviceRegistry()
    manager.seed(CONFIG)
    live = DeviceManager(manager._store, registry)  # the runtime shares one registry with ingest
    live.seed(CONFIG)
    normalizer = Normalizer(
        IngestSettings(routes=[TopicRoute(pattern="citywatch/events/#")]),
        65536,
        registry,
        lambda route: build_codec(route, registry, {}),
    )

    def send(device_id: str) -> tuple[int, list[str]]:
        body = json.dumps(
            {
                "device_id": device_id,
                "kind": "bin",
                "time": RECEIVED_MS - 1000,
                "attributes": {"fill_pct": 50},
            }
        ).encode()
        result = normalizer.handle(f"citywatch/events/{device_id}", body, RECEIVED_MS)
        return len(result.events), [d.reason for d in result.dead_letters]

    assert send("new-bin") == (0, ["unknown_device"])
    live.create(DeviceSettings(device_id="new-bin", kind="bin"))
    assert send("new-bin") == (1, [])
    live.deactivate("new-bin")
    assert send("new-bin") == (0, ["inactive_device"])
    live.update("new-bin", {"active": True})
    assert send("new-bin") == (1, [])


def test_without_a_managed_registry_the_api_says_so(tmp_path: Path) -> None:
    store = SqliteStore.in_directory(tmp_path)
    with served(create_app(ApiServices(store=store, metrics=Metrics()))) as test_client:
        assert test_client.get("/v1/devices").status_code == 503
    store.close()


def test_a_threshold_override_out_of_range_is_refused_with_its_path(client: httpx.Client) -> None:
    refused = client.patch("/v1/devices/bin-1", json={"thresholds": {"bin_overflow": {"open_pct": 120}}})
    assert refused.status_code == 422
    assert "bin_overflow.open_pct: must be at most 100, got 120" in refused.text
    unknown = client.post("/v1/devices", json={"device_id": "bin-2", "kind": "bin",
                                                "thresholds": {"bin_overflw": {"open_pct": 80}}})
    assert unknown.status_code == 422 and "unknown rule 'bin_overflw'" in unknown.text
    assert client.get("/v1/devices/bin-1").json()["thresholds"] == {}
