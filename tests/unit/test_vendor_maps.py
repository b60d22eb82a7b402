"""Vendor field maps: numbers, strings with units, sentinels, fractions, value maps, configuration checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core.ingest_config import VendorField, VendorMap
from core.settings import ConfigError, load_settings
from ingest.codecs.base import CodecError
from ingest.vendor_maps import apply_vendor_map
from tests.support.formats import shipped_vendor_maps


def one_field(**field: object) -> VendorMap:
    return VendorMap(fields=[VendorField(source="x", **field)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("attribute", "unit", "raw", "expected"),
    [
        ("distance_mm", "mm", 1234, 1234),
        ("distance_mm", "mm", "1234 mm", 1234),
        ("distance_mm", "mm", "1.5 m", 1500),
        ("distance_mm", None, "85.5cm", 855),
        ("distance_cm", "mm", 1234, 123.4),
        ("battery_v", "V", "3.42 V", 3.42),
        ("battery_v", "mV", 3420, 3.42),
        ("battery_v", None, "3420 mV", 3.42),
        ("fill_pct", "fraction", 0.42, 42),
        ("fill_pct", "%", "87%", 87),
        ("fill_pct", "%", 87.5, 87.5),
        ("temperature_c", "C", "22.50", 22.5),
        ("temperature_c", None, "-3.5 °C", -3.5),
        ("temperature_c", "K", 295.15, 22),
        ("tilt_deg", "deg", 12, 12),
        ("rssi", None, -97, -97),
    ],
)
def test_conversions(attribute: str, unit: str | None, raw: object, expected: float) -> None:
    attributes = apply_vendor_map(one_field(attribute=attribute, unit=unit), {"x": raw}, "object")
    assert attributes == {attribute: pytest.approx(expected)}


@pytest.mark.parametrize(
    ("field", "raw", "reason", "detail"),
    [
        ({"attribute": "distance_mm", "unit": "mm"}, "far", "invalid_field", "object.x: expected a number"),
        (
            {"attribute": "distance_mm", "unit": "mm"},
            "12 V",
            "invalid_field",
            "object.x: unit 'V' cannot become",
        ),
        ({"attribute": "distance_mm", "unit": "mm"}, "12 furlong", "invalid_field", "object.x: unknown unit"),
        ({"attribute": "distance_mm", "unit": "mm"}, [1], "invalid_field", "object.x: expected a number"),
        (
            {"attribute": "distance_mm", "sentinels": ["Invalid Reading"]},
            "Invalid Reading",
            "sensor_fault",
            "object.x: the sensor reported 'Invalid Reading'",
        ),
        (
            {"attribute": "tilted", "values": {"normal": False, "tilt": True}},
            "upside-down",
            "invalid_field",
            "object.x: 'upside-down' is not one of 'normal', 'tilt'",
        ),
    ],
)
def test_rejections_name_the_field(field: dict[str, object], raw: object, reason: str, detail: str) -> None:
    with pytest.raises(CodecError) as caught:
        apply_vendor_map(one_field(**field), {"x": raw}, "object")
    assert caught.value.reason == reason and caught.value.detail.startswith(detail), caught.value.detail


def test_a_sentinel_can_drop_only_its_field_and_say_so() -> None:
    vendor_map = VendorMap(
        fields=[
            VendorField(source="Distance", attribute="distance_mm", unit="mm"),
            VendorField(
                source="Temp",
                attribute="temperature_c",
                unit="C",
                sentinels=["327.67"],
                on_sentinel="drop_field",
            ),  # type: ignore[arg-type]
        ]
    )
    attributes = apply_vendor_map(vendor_map, {"Distance": "900 mm", "Temp": "327.67"}, "p")
    assert attributes == {"distance_mm": 900, "dropped_fields": ["temperature_c: 327.67"]}


def test_required_fields_nested_sources_and_unmapped_fields() -> None:
    vendor_map = VendorMap(
        fields=[VendorField(source="level.fill", attribute="fill_pct", unit="fraction", required=True)],
        keep_unmapped=True,
    )
    assert apply_vendor_map(vendor_map, {"level": {"fill": 0.5}, "lid": "open"}, "p") == {
        "fill_pct": 50,
        "lid": "open",
    }
    with pytest.raises(CodecError, match=r"missing_field: p.level.fill: required"):
        apply_vendor_map(vendor_map, {"lid": "open"}, "p")


def test_the_shipped_maps_cover_two_real_ultrasonic_bin_sensors() -> None:
    maps = shipped_vendor_maps()
    milesight = apply_vendor_map(
        maps["Milesight EM310-UDL"], {"battery": 92, "distance": 2116, "position": "tilt"}, "p"
    )
    assert milesight == {"distance_mm": 2116, "battery_pct": 92, "tilted": True}
    dragino = apply_vendor_map(
        maps["Dragino LDDS75"],
        {"Bat": "3.42 V", "Distance": "1234 mm", "Interrupt_flag": 0, "TempC_DS18B20": "21.30"},
        "p",
    )
    assert dragino == {"distance_mm": 1234, "battery_v": 3.42, "temperature_c": 21.3, "interrupt": False}
    for sentinel in ("Invalid Reading", "No Sensor"):
        with pytest.raises(CodecError, match="sensor_fault"):
            apply_vendor_map(maps["Dragino LDDS75"], {"Distance": sentinel}, "p")


def test_a_bad_vendor_map_stops_the_configuration_with_the_field(tmp_path: Path) -> None:
    (tmp_path / "maps.yaml").write_text(
        yaml.safe_dump({"X1": {"fields": [{"source": "d", "atribute": "x"}]}})
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"vendor_maps_file": "maps.yaml"}))
    with pytest.raises(ConfigError, match=r"(?s)maps.yaml.*X1.fields.0.atribute"):
        load_settings(tmp_path / "c.yaml")
