"""Vendor field maps: numbers, strings with units, sentinels, fractions, value maps, configuration checks."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from core.ingest_config import VendorField, VendorMap
from core.metrics import Metrics
from core.settings import ConfigError, DeviceSettings, TopicRoute, load_settings
from ingest.codecs.base import CodecError
from ingest.codecs.catalogue import build_codec
from ingest.registry import DeviceRegistry
from ingest.vendor_maps import VendorMapNotices, apply_vendor_map, map_payload, vendor_map_for
from tests.support.formats import DATA, RECEIVED_MS, shipped_vendor_maps


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


# What each published decoder of the shipped models outputs. The Dragino shapes are what the decoders in
# github.com/dragino/dragino-end-node-decoder (LDDS75/) return for the payload 0D4A 04D2 00 0000 01 (and
# 00 E1 for 22.5 °C); the TTN device repository's vendor/dragino/ldds75.js puts the distance under `value`
# and sends {"distance": "No Sensor"} for a 4-byte payload (its codec example).
@pytest.mark.parametrize(
    ("decoded", "expected"),
    [
        (  # LDDS75_Decoder_V1.1.4.js (TTN v2 style): numbers, temperature as "22.50"
            {
                "Node_type": "LDDS75",
                "Bat": 3.402,
                "Distance": 1234,
                "Interrupt_flag": 0,
                "TempC_DS18B20": "22.50",
                "Sensor_flag": 1,
            },
            {"distance_mm": 1234, "battery_v": 3.402, "temperature_c": 22.5, "interrupt": False},
        ),
        (  # LDDS751.1.4_ChirpstackV4_Decoder.txt: strings with units
            {
                "Node_type": "LDDS75",
                "Bat": "3.402 V",
                "Distance": "1234 mm",
                "Interrupt_flag": 0,
                "TempC_DS18B20": "22.50 °C",
                "Sensor_flag": 1,
            },
            {"distance_mm": 1234, "battery_v": 3.402, "temperature_c": 22.5, "interrupt": False},
        ),
        (  # the same without a DS18B20 probe: 0x0000 is "0.00 °C", not a real 0 °C
            {
                "Node_type": "LDDS75",
                "Bat": "3.402 V",
                "Distance": "1234 mm",
                "Interrupt_flag": 0,
                "TempC_DS18B20": "0.00 °C",
                "Sensor_flag": 1,
            },
            {
                "distance_mm": 1234,
                "battery_v": 3.402,
                "interrupt": False,
                "dropped_fields": ["temperature_c: 0.00 °C"],
            },
        ),
        (  # "LDDS75 decoder--TTN.txt", before firmware 1.1.4: Interrupt_status
            {"Node_type": "LDDS75", "Bat": 3.402, "Distance": 1234, "Interrupt_status": 1},
            {"distance_mm": 1234, "battery_v": 3.402, "interrupt": True},
        ),
        (  # TTN device repository decoder, 5-byte payload: the distance is `value`, `distance` the battery
            {"value": 1234, "distance": 3402},
            {"distance_mm": 1234},
        ),
        (  # a decoder (or a hand-written formatter) that writes the keys in lower case
            {"bat": 3.402, "distance": 1234, "tempc_ds18b20": "22.50", "interrupt_flag": 0},
            {"distance_mm": 1234, "battery_v": 3.402, "temperature_c": 22.5, "interrupt": False},
        ),
    ],
)
def test_every_published_ldds75_decoder_maps_right(
    decoded: dict[str, object], expected: dict[str, object]
) -> None:
    mapped = map_payload(shipped_vendor_maps()["Dragino LDDS75"], decoded, "p")
    assert mapped.attributes == expected
    assert mapped.unmapped == []


@pytest.mark.parametrize(
    ("decoded", "detail"),
    [
        ({"distance": "No Sensor"}, "p.distance: the sensor reported 'No Sensor'"),  # TTN device repository
        (
            {"Bat": 3.402, "Distance": "Invalid Reading", "Interrupt_status": 0},
            "p.Distance: the sensor reported 'Invalid Reading'",
        ),
        ({"Bat": 3.402, "Distance": "no sensor"}, "p.Distance: the sensor reported 'no sensor'"),
        # V1.1.4 decoders send what the older one called "Invalid Reading" as the number itself
        (
            {"Bat": "3.402 V", "Distance": "0 mm", "TempC_DS18B20": "0.00 °C", "Sensor_flag": 0},
            "p.Distance: the sensor reported '0 mm' (below 20",
        ),
        (
            {"Bat": 3.402, "Distance": 10, "Interrupt_flag": 0},
            "p.Distance: the sensor reported '10' (below 20",
        ),
    ],
)
def test_ldds75_sentinels_are_sensor_faults(decoded: dict[str, object], detail: str) -> None:
    with pytest.raises(CodecError) as caught:
        apply_vendor_map(shipped_vendor_maps()["Dragino LDDS75"], decoded, "p")
    assert caught.value.reason == "sensor_fault"
    assert caught.value.detail.startswith(detail), caught.value.detail


@pytest.mark.parametrize(
    ("decoded", "expected"),
    [
        (
            {"battery": 92, "distance": 2116, "position": "tilt"},  # Milesight SensorDecoders README example
            {"distance_mm": 2116, "battery_pct": 92, "tilted": True},
        ),
        (
            {"battery": 92, "distance": 2116, "tilt": "tilt"},  # TTN device repository codec example
            {"distance_mm": 2116, "battery_pct": 92, "tilted": True},
        ),
        (
            {"battery": 92, "distance": 2116, "position": 0},  # the decoder with RAW_VALUE set
            {"distance_mm": 2116, "battery_pct": 92, "tilted": False},
        ),
        (
            {"battery": 92, "distance": 2116, "position": "unknown"},  # a code the decoder does not know
            {"distance_mm": 2116, "battery_pct": 92, "dropped_fields": ["tilted: unknown"]},
        ),
        (
            {
                "ipso_version": "v0.1",
                "hardware_version": "v1.1",
                "firmware_version": "v1.3",
                "sn": "6136c10123456789",
                "lorawan_class": "Class A",
                "tsl_version": "v1.2",
                "device_status": "on",
            },
            {},
        ),
    ],
)
def test_every_published_em310_udl_decoder_maps_right(
    decoded: dict[str, object], expected: dict[str, object]
) -> None:
    mapped = map_payload(shipped_vendor_maps()["Milesight EM310-UDL"], decoded, "p")
    assert mapped.attributes == expected
    assert mapped.unmapped == []


def test_field_names_match_whatever_their_case_and_separators_but_exact_spelling_wins() -> None:
    vendor_map = VendorMap(fields=[VendorField(source="TempC_DS18B20", attribute="temperature_c", unit="C")])
    for key in ("TempC_DS18B20", "tempc_ds18b20", "TempCDS18B20", "TEMPC-DS18B20", "tempc ds18b20"):
        assert apply_vendor_map(vendor_map, {key: "21.5"}, "p") == {"temperature_c": 21.5}, key
    both = {"tempc_ds18b20": "1.0", "TempC_DS18B20": "21.5"}
    assert apply_vendor_map(vendor_map, both, "p") == {"temperature_c": 21.5}
    nested = VendorMap(fields=[VendorField(source="sensor.Level_mm", attribute="distance_mm", unit="mm")])
    with pytest.raises(CodecError, match=r"invalid_field: p\.Sensor\.level_MM: expected a number"):
        apply_vendor_map(nested, {"Sensor": {"level_MM": "far"}}, "p")


def test_aliases_are_tried_in_order_after_the_source() -> None:
    vendor_map = VendorMap(
        fields=[VendorField(source="level", aliases=["Distance", "dist"], attribute="distance_mm", unit="mm")]
    )
    assert apply_vendor_map(vendor_map, {"dist": 5, "Distance": 7}, "p") == {"distance_mm": 7}
    assert apply_vendor_map(vendor_map, {"dist": 5, "level": 9}, "p") == {"distance_mm": 9}
    assert map_payload(vendor_map, {"dist": 5, "Distance": 7}, "p").unmapped == []


@pytest.mark.parametrize(
    ("sentinel", "raw", "is_sentinel"),
    [
        ("0.00", "0.00 °C", True),
        ("0.00", "0.00", True),
        ("0.00", 0, True),
        ("0.00", "0 °C", True),
        ("0.00", "0.01 °C", False),
        ("No Sensor", " no  SENSOR ", True),
        ("No Sensor", "No Sensors", False),
        ("327.67", 327.67, True),
    ],
)
def test_sentinels_match_text_loosely_and_numbers_by_value(
    sentinel: str, raw: object, is_sentinel: bool
) -> None:
    vendor_map = one_field(attribute="reading", sentinels=[sentinel], on_sentinel="drop_field")
    attributes = apply_vendor_map(vendor_map, {"x": raw}, "p")
    assert ("reading" not in attributes) is is_sentinel, attributes


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(19, None), ("19.9 mm", None), ("1 cm", None), (20, 20), ("1.5 m", 1500), ("2 cm", 20)],
)
def test_invalid_below_compares_in_the_fields_unit(raw: object, expected: int | None) -> None:
    vendor_map = one_field(attribute="distance_mm", unit="mm", invalid_below=20, on_sentinel="drop_field")
    attributes = apply_vendor_map(vendor_map, {"x": raw}, "p")
    assert attributes.get("distance_mm") == expected, attributes
    assert ("dropped_fields" in attributes) is (expected is None)


def test_a_number_written_as_a_sentinel_in_yaml_is_the_same_sentinel(tmp_path: Path) -> None:
    (tmp_path / "maps.yaml").write_text(
        "M1:\n  fields:\n    - {source: t, attribute: temperature_c, unit: C, sentinels: [0.00, -3276.8],"
        " on_sentinel: drop_field}\n",
        encoding="utf-8",
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"vendor_maps_file": "maps.yaml"}))
    vendor_map = load_settings(tmp_path / "c.yaml").vendor_maps["M1"]
    assert apply_vendor_map(vendor_map, {"t": "0.00 °C"}, "p") == {
        "dropped_fields": ["temperature_c: 0.00 °C"]
    }
    assert apply_vendor_map(vendor_map, {"t": -3276.8}, "p") == {"dropped_fields": ["temperature_c: -3276.8"]}


def test_value_maps_ignore_case() -> None:
    vendor_map = one_field(attribute="tilted", values={"normal": False, "tilt": True})
    assert apply_vendor_map(vendor_map, {"x": "Tilt"}, "p") == {"tilted": True}


def test_unmapped_fields_are_named_unless_ignored_or_kept() -> None:
    vendor_map = VendorMap(
        fields=[VendorField(source="distance", attribute="distance_mm", unit="mm")], ignore=["Node_Type"]
    )
    decoded = {"distance": 5, "node_type": "X", "humidity": 40, "Battery": 3}
    assert map_payload(vendor_map, decoded, "p").unmapped == ["humidity", "Battery"]
    kept = vendor_map.model_copy(update={"keep_unmapped": True})
    mapped = map_payload(kept, decoded, "p")
    assert mapped.unmapped == [] and mapped.attributes == {"distance_mm": 5, "humidity": 40, "Battery": 3}
    for mapped_value, clashing_value in ((5, 7), (5, 5)):
        clash = map_payload(kept, {"distance": mapped_value, "distance_mm": clashing_value}, "p")
        assert clash.attributes == {"distance_mm": mapped_value} and clash.unmapped == ["distance_mm"]
    assert map_payload(vendor_map, {"distance": 5, "distance_mm": 7}, "p").unmapped == ["distance_mm"]


@pytest.mark.parametrize(
    ("model", "found"),
    [
        ("Dragino LDDS75", "Dragino LDDS75"),
        ("dragino ldds75", "Dragino LDDS75"),
        ("DRAGINO-LDDS75", "Dragino LDDS75"),
        ("LDDS75", "Dragino LDDS75"),
        ("ldds-75", "Dragino LDDS75"),
        ("EM310-UDL", "Milesight EM310-UDL"),
        ("em310 udl", "Milesight EM310-UDL"),
        ("milesight_em310_udl", "Milesight EM310-UDL"),
        ("DDS75", None),  # a different sensor, not the end of "LDDS75"
        ("UDL", None),
        ("Dragino", None),
        ("", None),
        (None, None),
    ],
)
def test_vendor_map_for_matches_model_names_as_people_write_them(
    model: str | None, found: str | None
) -> None:
    maps = shipped_vendor_maps()
    assert vendor_map_for(model, maps) is (None if found is None else maps[found])


def test_vendor_map_for_prefers_names_then_aliases_and_refuses_to_guess() -> None:
    def mapping(description: str, aliases: list[str] | None = None) -> VendorMap:
        return VendorMap(
            description=description,
            aliases=aliases or [],
            fields=[VendorField(source="d", attribute="distance_mm")],
        )

    maps = {
        "Acme S1": mapping("acme"),
        "Other S1": mapping("other"),
        "Bolt X": mapping("bolt", ["S1 v2", "acme s1"]),
    }
    assert vendor_map_for("acme-s1", maps) is maps["Acme S1"]  # a name wins over an alias
    assert vendor_map_for("S1 V2", maps) is maps["Bolt X"]
    assert vendor_map_for("S1", maps) is None  # ends two maps' names: ambiguous


def _tts_uplink(device_id: str, decoded: dict[str, object]) -> bytes:
    body = json.loads((DATA / "tts" / "valid" / "em310_udl_uplink.json").read_text(encoding="utf-8"))
    body["end_device_ids"]["device_id"] = device_id
    body["uplink_message"]["decoded_payload"] = decoded
    return json.dumps(body).encode()


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_at_run_time_unmapped_fields_and_models_without_a_map_are_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    registry = DeviceRegistry(
        [
            DeviceSettings(device_id="bin-a", kind="bin", model="ldds75"),
            DeviceSettings(device_id="bin-b", kind="bin", model="Acme Sonar 9"),
            DeviceSettings(device_id="bin-c", kind="bin"),
        ]
    )
    codec = build_codec(
        TopicRoute(pattern="#", codec="tts"), registry, shipped_vendor_maps(), VendorMapNotices(metrics)
    )
    caplog.set_level(logging.WARNING, logger="ingest.vendor_maps")
    for _ in range(3):
        [event] = codec.decode(
            "v3/a@ttn/devices/bin-a/up",
            _tts_uplink("bin-a", {"Distance": "900 mm", "Bat_status": 3}),
            RECEIVED_MS,
        )
        assert event.attributes["distance_mm"] == 900 and "Bat_status" not in event.attributes
        codec.decode("v3/a@ttn/devices/bin-b/up", _tts_uplink("bin-b", {"level": 4}), RECEIVED_MS)
        codec.decode("v3/a@ttn/devices/bin-c/up", _tts_uplink("bin-c", {"level": 4}), RECEIVED_MS)
    assert _sample(metrics, "citywatch_unmapped_fields_total", model="ldds75", field="Bat_status") == 3
    assert _sample(metrics, "citywatch_uplinks_without_vendor_map_total", model="Acme Sonar 9") == 3
    # bin-c has no model, so no map is due: nothing is counted for it.
    assert _sample(metrics, "citywatch_uplinks_without_vendor_map_total", model="") is None
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == [
        "decoded field 'Bat_status' of model 'ldds75' is not in vendor map 'Dragino LDDS75': it is not "
        "stored (map it, or list it under `ignore`)",
        "device model 'Acme Sonar 9' names no vendor map: its decoded fields are stored as the decoder names "
        "them, unconverted (add a map to vendor_maps, or correct the model)",
    ]


def test_notice_labels_and_log_lines_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    notices = VendorMapNotices(metrics)
    caplog.set_level(logging.WARNING, logger="ingest.vendor_maps")
    fields = [f"f{i}" for i in range(VendorMapNotices.MAX_LABELS + 5)]
    notices.unmapped("M", "Map", fields)
    notices.unmapped("M", "Map", fields)
    assert _sample(metrics, "citywatch_unmapped_fields_total", model="M", field="f0") == 2
    assert _sample(metrics, "citywatch_unmapped_fields_total", model="other", field="other") == 10
    assert len(caplog.records) == VendorMapNotices.MAX_LABELS + 1
    overflow = caplog.records[-1].getMessage()
    assert overflow.startswith(f"more than {VendorMapNotices.MAX_LABELS} unmapped decoded fields: further")
    caplog.clear()
    for index in range(VendorMapNotices.MAX_LABELS + 3):
        notices.without_map(f"model {index}")
        notices.without_map(f"model {index}")
    assert _sample(metrics, "citywatch_uplinks_without_vendor_map_total", model="model 0") == 2
    assert _sample(metrics, "citywatch_uplinks_without_vendor_map_total", model="other") == 6
    assert len(caplog.records) == VendorMapNotices.MAX_LABELS + 1
