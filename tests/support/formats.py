"""Fixtures of the vendor formats (tests/data/<format>/{valid,edge,invalid}) and a registry that knows
the devices they come from."""

from __future__ import annotations

from pathlib import Path

from core.ingest_config import VendorMap
from core.settings import DeviceSettings, TopicRoute, load_settings
from ingest.codecs.base import Codec
from ingest.codecs.catalogue import build_codec
from ingest.registry import DeviceRegistry

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
SCHEMAS = REPO / "configs" / "schemas"
# 2026-11-26T05:00:05Z: a few seconds after the fixtures' own times.
RECEIVED_MS = 1_795_669_205_000

# Topic each format's fixtures are published on (the device level matches the fixtures' device).
TOPICS = {
    "frigate": "frigate/events",
    "tts": "v3/futian-bins@ttn/devices/{device}/up",
    "chirpstack": "application/17c82e96/device/{device}/event/up",
    "senml": "senml/bin-0101",
    "signal": "citywatch/signal/sig-0001",
    "detector": "citywatch/detector/det-0003",
    "camera_violation": "citywatch/camera-violations/epolice-0001",
}


def fixture_devices() -> list[DeviceSettings]:
    return [
        DeviceSettings(
            device_id="em310-bin-0042",
            kind="bin",
            model="Milesight EM310-UDL",
            lat=22.5411,
            lon=114.06416,
            install={"bin_depth_mm": 2400},
        ),
        DeviceSettings(
            device_id="ldds75-bin-0007",
            kind="bin",
            model="Dragino LDDS75",
            lat=22.54361,
            lon=114.05512,
            install={"bin_depth_mm": 1100},
        ),
        DeviceSettings(device_id="shennan-fuhua-north", kind="track", lat=22.53978, lon=114.05502),
        DeviceSettings(device_id="sig-0001", kind="signal", lat=22.5399, lon=114.0553),
        DeviceSettings(device_id="det-0003", kind="detector", lat=22.5401, lon=114.0551),
        DeviceSettings(device_id="epolice-0001", kind="camera_violation", lat=22.54012, lon=114.05489),
        DeviceSettings(device_id="odour-ft-0003", kind="odour", lat=22.545, lon=114.06),
        DeviceSettings(device_id="air-ft-0009", kind="air", lat=22.5465, lon=114.0519),
        DeviceSettings(device_id="urn:dev:ow:10e2073a01080063", kind="power"),
        DeviceSettings(device_id="urn:dev:ow:10e2073a0108006", kind="power"),
        DeviceSettings(device_id="water-ft-0002", kind="water", lat=22.55, lon=114.07),
        DeviceSettings(device_id="bin-0101", kind="bin", lat=22.54361, lon=114.05512),
    ]


def shipped_vendor_maps() -> dict[str, VendorMap]:
    """The vendor maps in configs/ (the ones users get), not a test copy."""
    return dict(load_settings(REPO / "configs" / "citywatch.yaml").vendor_maps)


def codec_for(name: str, registry: DeviceRegistry | None = None, **route: object) -> Codec:
    registry = registry or DeviceRegistry(fixture_devices())
    return build_codec(
        TopicRoute(pattern="#", codec=name, **route),  # type: ignore[arg-type]
        registry,
        shipped_vendor_maps(),
    )


def fixtures(name: str, group: str) -> list[Path]:
    return sorted((DATA / name / group).glob("*.json"))
