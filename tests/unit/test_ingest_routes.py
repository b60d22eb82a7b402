"""Routing every format through the normalizer: bad input of each codec becomes a dead letter with a reason,
never an exception; the shipped configuration builds a codec for each of its routes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from citywatch.cli import main
from core.settings import IngestSettings, TopicRoute, load_settings
from ingest.codecs.catalogue import CODEC_NAMES, build_codec
from ingest.normalizer import Normalizer
from ingest.registry import DeviceRegistry
from tests.support.formats import DATA, RECEIVED_MS, REPO, SCHEMAS, fixture_devices, shipped_vendor_maps

MAX_PAYLOAD = 4096
VALID = {
    "native": b'{"device_id": "bin-0101", "kind": "bin", "time": 1795669200000, "attributes": {"fill_pct": 5}'
    b"}",
    "frigate": (DATA / "frigate/valid/v013_new.json").read_bytes(),
    "tts": (DATA / "tts/valid/em310_udl_uplink.json").read_bytes(),
    "chirpstack": (DATA / "chirpstack/valid/v4_em310_up.json").read_bytes(),
    "senml": (DATA / "senml/valid/toilet_odour_pack.json").read_bytes(),
    "signal": (SCHEMAS / "examples/signal.json").read_bytes(),
    "detector": (SCHEMAS / "examples/detector.json").read_bytes(),
    "camera_violation": (SCHEMAS / "examples/camera_violation.json").read_bytes(),
}


def normalizer(registry: DeviceRegistry) -> Normalizer:
    routes = [TopicRoute(pattern=f"{name}/#", codec=name) for name in CODEC_NAMES]  # type: ignore[arg-type]
    maps = shipped_vendor_maps()
    return Normalizer(
        IngestSettings(routes=routes), MAX_PAYLOAD, registry, lambda route: build_codec(route, registry, maps)
    )


def test_every_codec_has_a_valid_message_here() -> None:
    assert set(VALID) == set(CODEC_NAMES)


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_each_codec_accepts_its_valid_message_through_the_normalizer(name: str) -> None:
    result = normalizer(DeviceRegistry(fixture_devices())).handle(f"{name}/t", VALID[name], RECEIVED_MS)
    assert result.events and not result.dead_letters, result.dead_letters
    assert all(event.source == name for event in result.events)


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_each_codec_dead_letters_unknown_devices_oversized_and_garbage(name: str) -> None:
    norm = normalizer(DeviceRegistry())
    [unknown] = norm.handle(f"{name}/t", VALID[name], RECEIVED_MS).dead_letters[:1]
    assert unknown.reason == "unknown_device" and unknown.source == name
    [oversized] = norm.handle(f"{name}/t", b" " * (MAX_PAYLOAD + 1), RECEIVED_MS).dead_letters
    assert oversized.reason == "oversized"
    for garbage in (
        b"",
        b"\xff\xfe",
        b"[]",
        b"{}",
        b"null",
        b"[" * 4000,
        json.dumps({"a": [1] * 10}).encode(),
    ):
        [letter] = norm.handle(f"{name}/t", garbage, RECEIVED_MS).dead_letters
        assert letter.source == name and letter.reason and letter.detail


def test_the_shipped_configuration_builds_a_codec_for_every_route() -> None:
    settings = load_settings(REPO / "configs" / "citywatch.yaml")
    registry = DeviceRegistry(settings.devices)
    assert {route.codec for route in settings.ingest.routes} == set(CODEC_NAMES)
    for route in settings.ingest.routes:
        assert build_codec(route, registry, settings.vendor_maps).name == route.codec


def test_check_config_refuses_broken_grids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "grids.geojson").write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", '
        '"properties": {"grid": "A"}, "geometry": null}]}'
    )
    (tmp_path / "c.yaml").write_text("geo:\n  grids_file: grids.geojson\n")
    assert main(["check-config", str(tmp_path / "c.yaml")]) == 2
    assert "features[0].properties.district: required" in capsys.readouterr().err
    assert main(["check-config", str(REPO / "configs" / "citywatch.yaml")]) == 0


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("{pattern: 's/#', codec: senml, senml_names: {dust: 'PM 10'}}", "senml_names.dust.measurement"),
        ("{pattern: 'v3/#', codec: tts, simulated_uplinks: ignore}", "simulated_uplinks"),
        ("{pattern: 'v3/#', codec: tts, device_position: gps}", "device_position"),
    ],
)
def test_check_config_refuses_bad_lorawan_and_senml_route_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], route: str, message: str
) -> None:
    (tmp_path / "c.yaml").write_text(f"ingest:\n  routes:\n    - {route}\n")
    assert main(["check-config", str(tmp_path / "c.yaml")]) == 2
    assert message in capsys.readouterr().err
