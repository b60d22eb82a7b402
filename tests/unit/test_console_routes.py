"""The console's own read-only routes (api/routes/console.py) and the page and assets served at /."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.access.keys import Scope
from api.console.config import ConsoleApproach, ConsoleMap
from api.console.serve import STATIC
from core.models import Event, stable_id
from core.settings import ConfigError, Settings, load_settings
from tests.support.alerts import AlertApi, alert_api, bearer
from tests.support.process import REPO

PLATE = "粤B12345"
GRIDS = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {"grid": "FT-11", "district": "futian"},
     "geometry": {"type": "Polygon",
                  "coordinates": [[[114.0, 22.5], [114.1, 22.5], [114.1, 22.6], [114.0, 22.5]]]}}]}


def event(device_id: str, kind: str, at_ms: int, **attributes: Any) -> Event:
    return Event(event_id=stable_id(device_id, kind, at_ms, sorted(attributes.items())), device_id=device_id,
                 kind=kind, event_time_ms=at_ms, ingest_time_ms=at_ms, attributes=attributes)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[AlertApi]:
    api = alert_api(tmp_path)
    api.services.console = ConsoleMap(
        time_zone="Asia/Shanghai", layers={"grids": GRIDS},
        intersections={"ix-1": [ConsoleApproach("north", "north_through"),
                                ConsoleApproach("east", "east_through")]},
        camera_intersections={"cam-1": "ix-1"})
    now_ms = int(time.time() * 1000)
    api.store.write_events([
        event("sig-1", "signal", now_ms - 30 * 60_000, intersection="ix-1", phase="north_through",
              state="green"),
        event("sig-1", "signal", now_ms - 60_000, intersection="ix-1", phase="north_through", state="red"),
        event("sig-1", "signal", now_ms - 120_000, intersection="ix-1", phase="east_through", state="green"),
        event("sig-2", "signal", now_ms - 60_000, intersection="ix-2", phase="north_through", state="green"),
        event("det-n", "detector", now_ms - 5000, intersection="ix-1", approach="north", interval_s=60,
              occupancy_pct=42.5, speed_kmh=11.0, flow_veh_h=900),
        event("cam-1", "track", now_ms - 2000, track_id="t1", label="car", plate=PLATE,
              snapshot_url="https://evidence.example/t1.jpg"),
    ])
    api.store.flush()
    yield api
    api.close()


def test_the_session_names_the_key_its_scopes_and_the_map_settings(api: AlertApi, client: TestClient) -> None:
    reader = client.get("/v1/console/session", headers=bearer(api.key(Scope.VIOLATIONS_READ, name="desk")))
    assert reader.status_code == 200
    body = reader.json()
    assert (body["name"], body["scopes"], body["auth"]) == ("desk", ["violations:read"], "required")
    assert body["time_zone"] == "Asia/Shanghai"
    assert body["tiles"] == {"url": None, "attribution": "", "max_zoom": 19}
    assert body["layers"] == {"grids": GRIDS}
    admin = client.get("/v1/console/session", headers=bearer(api.key(Scope.ADMIN))).json()
    assert admin["scopes"] == sorted(scope.value for scope in Scope)  # admin opens every scope
    assert client.get("/v1/console/session").status_code == 401


def test_the_intersection_view_has_its_phases_approaches_and_device_health_but_no_plates(
        api: AlertApi, client: TestClient) -> None:
    token = api.key(Scope.READINGS_READ)
    answer = client.get("/v1/console/intersections/ix-1", params={"minutes": 10}, headers=bearer(token))
    assert answer.status_code == 200
    body = answer.json()
    # Within the last 10 minutes, oldest first, this intersection's only.
    assert [(c["phase"], c["state"]) for c in body["signal_changes"]] == [
        ("east_through", "green"), ("north_through", "red")]
    assert body["to_ms"] - body["from_ms"] == 10 * 60_000
    north, east = body["approaches"]
    assert (north["name"], north["phase"], north["detector_id"]) == ("north", "north_through", "det-n")
    assert (north["occupancy_pct"], north["speed_kmh"]) == (42.5, 11.0)
    assert (east["name"], east["detector_id"], east["reading_time_ms"]) == ("east", None, None)
    health = {d["device_id"]: d for d in body["devices"]}
    assert set(health) == {"sig-1", "det-n", "cam-1"}
    assert health["cam-1"]["last_seen_ms"] is not None
    assert PLATE not in answer.text and "evidence.example" not in answer.text
    assert client.get("/v1/console/intersections", headers=bearer(token)).json()["items"] == ["ix-1", "ix-2"]
    missing = client.get("/v1/console/intersections/ix-9", headers=bearer(token))
    assert missing.status_code == 404
    assert missing.json()["type"] == "urn:citywatch:problem:not-found"


def test_devices_and_intersections_need_readings_read(api: AlertApi, client: TestClient) -> None:
    token = api.key(Scope.VIOLATIONS_READ)
    for path in ("/v1/console/devices", "/v1/console/intersections", "/v1/console/intersections/ix-1"):
        refused = client.get(path, headers=bearer(token))
        assert refused.status_code == 403
        assert refused.json()["detail"] == "this API key lacks the scope readings:read"


def test_the_page_is_served_at_the_root_saying_whether_it_needs_a_key(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert '<body data-auth="required">' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # Everything the page loads is served here: no CDN, no other host.
    for reference in re.findall(r'(?:src|href)="([^"#]+)"', page.text):
        if reference.startswith("data:"):
            continue
        assert reference.startswith("/console/"), reference
        assert client.get(reference).status_code == 200, reference


def test_every_module_the_console_imports_exists() -> None:
    scripts = list((STATIC / "js").rglob("*.js"))
    assert scripts
    for script in scripts:
        for target in re.findall(r'(?:from|import\()\s*"(\.[^"]+)"', script.read_text(encoding="utf-8")):
            assert (script.parent / target).resolve().is_file(), f"{script.name} imports {target}"


def test_each_vendored_package_is_pinned_and_ships_its_licence() -> None:
    vendor = STATIC / "vendor"
    versions = json.loads((vendor / "versions.json").read_text())
    assert set(versions) == {path.name for path in vendor.iterdir() if path.is_dir()}
    for name, pin in versions.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", pin["version"]), name
        assert pin["integrity"].startswith("sha512-"), name
        assert (vendor / name / "LICENSE").stat().st_size > 500, name


def test_the_console_files_are_sent_compressed(client: TestClient) -> None:
    answer = client.get("/console/vendor/leaflet/leaflet.js", headers={"Accept-Encoding": "gzip"})
    assert answer.status_code == 200
    assert answer.headers["content-encoding"] == "gzip"


@pytest.mark.parametrize(("tile_url", "problem"), [
    ("tile.example/{z}/{x}/{y}.png", "must be an http(s) URL or a path on this server"),
    ("https://tile.example/{z}/{x}.png", "must contain {y}"),
])
def test_a_tile_url_without_a_scheme_or_a_placeholder_is_refused_at_load(tile_url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings().with_overrides(console__tile_url=tile_url)
    assert "console.tile_url" in str(refused.value) and problem in str(refused.value)


def test_the_map_reads_the_configured_layers_and_intersections(tmp_path: Path) -> None:
    roads = tmp_path / "roads.geojson"
    roads.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "Shennan"},
         "geometry": {"type": "LineString", "coordinates": [[114.0, 22.5], [114.1, 22.5]]}}]}))
    grids = REPO / "configs" / "geo" / "grids.geojson"
    settings = Settings().with_overrides(console__roads_file=str(roads), geo__grids_file=str(grids),
                                         console__tile_url="https://tile.example/{z}/{x}/{y}.png",
                                         traffic__intersections=[{"id": "ix-1", "approaches": [
                                             {"name": "north", "phase": "north_through"}]}])
    shown = ConsoleMap.from_settings(settings)
    assert set(shown.layers) == {"grids", "roads"}
    assert shown.layers["roads"]["features"][0]["properties"]["name"] == "Shennan"
    assert len(shown.layers["grids"]["features"]) == len(json.loads(grids.read_text())["features"])
    assert shown.intersections == {"ix-1": [ConsoleApproach("north", "north_through")]}
    assert shown.tile_url == "https://tile.example/{z}/{x}/{y}.png"


def test_the_roads_file_is_found_beside_the_configuration_or_refused(tmp_path: Path) -> None:
    config = tmp_path / "city.yaml"
    config.write_text("console:\n  roads_file: geo/roads.geojson\n")
    with pytest.raises(ConfigError) as missing:
        load_settings(config, environ={})
    assert f"console.roads_file: {tmp_path / 'geo' / 'roads.geojson'} does not exist" in str(missing.value)
    (tmp_path / "geo").mkdir()
    (tmp_path / "geo" / "roads.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    assert load_settings(config, environ={}).console.roads_file == tmp_path / "geo" / "roads.geojson"
