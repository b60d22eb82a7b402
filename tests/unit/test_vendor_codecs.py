"""Every vendor codec on fixtures written from its format's public documentation (tests/data/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.models import Event, Location
from core.sanitation_settings import AirQualitySettings
from core.settings import DeviceSettings, IngestSettings, TopicRoute, load_settings
from ingest.codecs.base import CodecError
from ingest.codecs.catalogue import build_codec
from ingest.geo import GeoTagger
from ingest.normalizer import Normalizer
from ingest.registry import DeviceRegistry
from processors.rules.air_quality import AirQualityRule
from tests.support.formats import (
    DATA,
    RECEIVED_MS,
    REPO,
    TOPICS,
    codec_for,
    fixture_devices,
    fixtures,
    shipped_vendor_maps,
)
from tests.support.rules import run as run_rules


def decode(name: str, path: Path | str, topic: str | None = None, **route: Any) -> list[Event]:
    payload = path.read_bytes() if isinstance(path, Path) else (DATA / name / path).read_bytes()
    # A topic without a device level, so only the tests about the topic's device check it.
    default_topic = TOPICS[name] if "{device}" not in TOPICS[name] else f"test/{name}"
    return codec_for(name, **route).decode(topic or default_topic, payload, RECEIVED_MS)


def only(name: str, fixture: str, **route: Any) -> Event:
    [event] = decode(name, fixture, **route)
    return event


def rejected(name: str, fixture: str, topic: str | None = None) -> CodecError:
    with pytest.raises(CodecError) as caught:
        decode(name, fixture, topic)
    return caught.value


# --- Frigate --------------------------------------------------------------------------------------


def test_frigate_013_new_object_is_a_track_event_keyed_by_camera_and_track() -> None:
    event = only("frigate", "valid/v013_new.json", media_base_url="http://frigate.local:5000/")
    assert event.device_id == "shennan-fuhua-north" and event.kind == "track" and event.source == "frigate"
    assert event.event_time_ms == 1_795_669_196_103  # after.frame_time, rounded to the millisecond
    attributes = event.attributes
    assert attributes["track_id"] == "1795669195.412201-k3n9x1" and attributes["stage"] == "new"
    assert attributes["label"] == "car" and attributes["score"] == 0.84765625
    assert attributes["zones"] == ["stop_line_north"] and attributes["entered_zones"] == ["stop_line_north"]
    assert attributes["box"] == [900, 392, 1126, 560] and attributes["position"] == [1013, 476]
    assert attributes["stationary"] is False and "plate" not in attributes and "speed_kmh" not in attributes
    base = "http://frigate.local:5000/api/events/1795669195.412201-k3n9x1"
    assert (
        attributes["snapshot_url"] == f"{base}/snapshot.jpg" and attributes["clip_url"] == f"{base}/clip.mp4"
    )


def test_frigate_014_sub_label_pair_gives_the_plate_and_zone_changes_are_derivable() -> None:
    first = only("frigate", "valid/v013_new.json")
    second = only("frigate", "valid/v014_update_sub_label_pair.json")
    assert second.attributes["plate"] == "粤B12345" and second.attributes["plate_score"] == 0.91
    # Entries and exits: compare the zones of consecutive events of one track.
    assert set(second.attributes["zones"]) - set(first.attributes["zones"]) == {"crosswalk_north"}
    assert set(first.attributes["zones"]) - set(second.attributes["zones"]) == {"stop_line_north"}
    assert second.attributes["entered_zones"] == ["stop_line_north", "crosswalk_north"]
    assert first.event_id != second.event_id and "snapshot_url" not in second.attributes  # no base URL


def test_frigate_016_plate_speed_and_heading() -> None:
    attributes = only("frigate", "valid/v016_update_plate_speed.json").attributes
    assert attributes["plate"] == "粤B6K8Q2" and attributes["plate_score"] == 0.93
    assert attributes["speed_kmh"] == 42.7 and attributes["heading_deg"] == 273.5


def test_frigate_speed_in_mph_is_converted() -> None:
    event = only("frigate", "valid/v016_update_plate_speed.json", speed_unit="mph")
    assert event.attributes["speed_kmh"] == pytest.approx(42.7 * 1.609344, abs=0.001)


def test_frigate_017_end_with_plate_pair_and_unknown_keys() -> None:
    attributes = only("frigate", "valid/v017_end.json").attributes
    assert attributes["stage"] == "end" and attributes["zones"] == []
    assert attributes["plate"] == "粤B6K8Q2" and attributes["plate_score"] == 0.95
    assert attributes["speed_kmh"] == 0


def test_frigate_edge_cases() -> None:
    stationary = only("frigate", "edge/stationary_without_box.json").attributes
    assert stationary["stationary"] is True and "box" not in stationary
    assert "plate" not in stationary  # "Delivery Co" is a sub label, not a plate
    minimal = only("frigate", "edge/minimal_after_only.json", device_id_prefix="nvr1:")
    assert minimal.device_id == "nvr1:shennan-fuhua-north"
    assert minimal.attributes == {
        "track_id": "1795669201.5-zz",
        "stage": "new",
        "label": "person",
        "zones": [],
        "entered_zones": [],
        "stationary": False,
    }


def test_frigate_sub_label_as_a_one_element_list_with_a_separate_score() -> None:
    attributes = only("frigate", "edge/sub_label_single_element_list.json").attributes
    assert attributes["plate"] == "粤B77Q21" and attributes["plate_score"] == 0.87


def test_frigate_event_ids_are_deterministic() -> None:
    assert (
        only("frigate", "valid/v016_update_plate_speed.json").event_id
        == only("frigate", "valid/v016_update_plate_speed.json").event_id
    )


@pytest.mark.parametrize(
    ("fixture", "reason", "field"),
    [
        ("missing_after.json", "missing_field", "after"),
        ("unknown_type.json", "invalid_field", "type"),
        ("box_three_numbers.json", "invalid_field", "after.box"),
        ("frame_time_text.json", "invalid_field", "after.frame_time"),
        ("plate_pair_of_three.json", "invalid_field", "after.recognized_license_plate"),
        ("false_positive.json", "unsupported_message", "after.false_positive"),
        ("truncated.json", "malformed_json", "payload"),
    ],
)
def test_frigate_rejects_with_a_reason_naming_the_field(fixture: str, reason: str, field: str) -> None:
    error = rejected("frigate", f"invalid/{fixture}")
    assert error.reason == reason and error.detail.startswith(field + ":"), error.detail


# --- The Things Stack -----------------------------------------------------------------------------


def test_tts_milesight_em310_uplink_through_its_vendor_map() -> None:
    event = only("tts", "valid/em310_udl_uplink.json")
    assert event.device_id == "em310-bin-0042" and event.kind == "bin" and event.source == "tts"
    assert event.event_id == "as:up:01JDQ8Z3V9T6N2C4X8R5M7K1PA"
    assert event.event_time_ms == 1_795_669_201_205  # uplink_message.received_at
    assert event.attributes == {
        "distance_mm": 2116,
        "battery_pct": 92,
        "tilted": True,
        "f_port": 85,
        "f_cnt": 1287,
        "rssi_dbm": -97,
        "snr_db": 6.25,
        "gateways": 2,
    }
    # Registered with a position: a fixed asset, whose registered position (added by the registry)
    # wins over locations.user.
    assert event.location is None


def test_tts_registered_position_of_a_fixed_asset_wins_over_the_network_servers() -> None:
    network = Location(lat=22.5411, lon=114.06416)  # the fixture's locations.user
    installed = DeviceSettings(device_id="em310-bin-0042", kind="bin", lat=22.6001, lon=114.1002)
    registry = DeviceRegistry([installed])
    event = only("tts", "valid/em310_udl_uplink.json", registry=registry)
    assert registry.enrich(event).location == Location(lat=22.6001, lon=114.1002)
    # A device registered without a position, or a route that trusts the network (moving assets).
    unplaced = DeviceRegistry([DeviceSettings(device_id="em310-bin-0042", kind="bin")])
    assert only("tts", "valid/em310_udl_uplink.json", registry=unplaced).location == network
    moving = only("tts", "valid/em310_udl_uplink.json", registry=registry, device_position="network")
    assert registry.enrich(moving).location == network


@pytest.mark.parametrize(("position", "grid"), [("registry", "FT-23"), ("network", "FT-22")])
def test_tts_fixed_asset_keeps_the_grid_of_where_it_is_installed(position: str, grid: str) -> None:
    # The bin is registered in grid FT-23; someone typed a position in FT-22 into the TTS console.
    message = json.loads((DATA / "tts/valid/em310_udl_uplink.json").read_text())
    message["uplink_message"]["locations"]["user"].update(latitude=22.54361, longitude=114.05512)
    registry = DeviceRegistry(fixture_devices())
    normalizer = Normalizer(
        IngestSettings(routes=[TopicRoute(pattern="v3/#", codec="tts", device_position=position)]),
        max_payload_bytes=65_536,
        registry=registry,
        codecs=lambda route: build_codec(route, registry, shipped_vendor_maps()),
        tagger=GeoTagger.from_settings(load_settings(REPO / "configs" / "citywatch.yaml").geo).tag_event,
    )
    topic = "v3/futian-bins@ttn/devices/em310-bin-0042/up"
    [event] = normalizer.handle(topic, json.dumps(message).encode(), RECEIVED_MS).events
    assert event.tags["grid"] == grid and event.tags["district"] == "futian"


def test_tts_moving_devices_follow_their_measured_position_over_the_console_one() -> None:
    message = json.loads((DATA / "tts/valid/em310_udl_uplink.json").read_text())
    message["uplink_message"]["locations"]["frm-payload"] = {
        "latitude": 22.55, "longitude": 114.07, "source": "SOURCE_GPS"
    }
    payload = json.dumps(message).encode()
    unplaced = DeviceRegistry([DeviceSettings(device_id="em310-bin-0042", kind="bin")])
    placed_by_hand = codec_for("tts", unplaced).decode("test/tts", payload, RECEIVED_MS)[0]
    assert placed_by_hand.location == Location(lat=22.5411, lon=114.06416)  # locations.user
    moving = codec_for("tts", unplaced, device_position="network").decode("test/tts", payload, RECEIVED_MS)[0]
    assert moving.location == Location(lat=22.55, lon=114.07)  # locations.frm-payload, this uplink's fix


def test_tts_data_uplink_without_f_port_is_decoded_not_taken_for_a_mac_frame() -> None:
    event = only("tts", "edge/data_uplink_without_f_port.json")
    assert event.attributes["distance_mm"] == 1500 and "f_port" not in event.attributes


@pytest.mark.parametrize(
    ("mode", "marked"), [("mark", {"simulated": True}), ("keep", {})]
)
def test_tts_simulated_uplinks_are_marked_or_kept(mode: str, marked: dict[str, bool]) -> None:
    event = only("tts", "edge/simulated_uplink.json", simulated_uplinks=mode)
    assert event.attributes == {"distance_mm": 1234, "battery_pct": 80, "tilted": False, "f_port": 85,
                                "f_cnt": 0, "gateways": 0, **marked}
    # The network server never saw it: its zero received_at gives way to the application server's.
    assert event.event_time_ms == 1_795_669_203_000


def test_tts_simulated_uplinks_dropped_are_dead_lettered_with_their_reason() -> None:
    with pytest.raises(CodecError) as caught:
        decode("tts", "edge/simulated_uplink.json", simulated_uplinks="drop")
    assert caught.value.reason == "simulated_uplink" and caught.value.detail.startswith("simulated: true")


def test_tts_dragino_ldds75_strings_with_units_and_a_sentinel_field_dropped() -> None:
    event = only("tts", "valid/ldds75_uplink.json")
    assert event.attributes["distance_mm"] == 1234 and event.attributes["battery_v"] == 3.42
    assert event.attributes["interrupt"] is False and "temperature_c" not in event.attributes
    assert event.attributes["dropped_fields"] == ["temperature_c: 0.00"]


def test_tts_edge_cases() -> None:
    first = only("tts", "edge/first_uplink_without_f_cnt.json")
    assert first.attributes["f_cnt"] == 0 and first.attributes["distance_mm"] == 30
    assert first.event_time_ms == 1_795_640_402_900  # 05:00:02.9+08:00, uplink_message.received_at wins
    assert first.event_id == only("tts", "edge/first_uplink_without_f_cnt.json").event_id
    gateway = only("tts", "edge/gateway_time_only.json")
    assert gateway.event_time_ms == 1_795_669_204_001
    assert gateway.attributes["battery_v"] == 3.38 and gateway.attributes["temperature_c"] == 21.5
    assert gateway.attributes["rssi_dbm"] == -91 and gateway.attributes["gateways"] == 2


def test_tts_devices_by_dev_eui_and_unregistered_devices_keep_raw_fields() -> None:
    event = only("tts", "valid/em310_udl_uplink.json", lorawan_device_id="eui")
    assert event.device_id == "24E124713C123456" and event.kind == "lorawan"
    assert event.attributes["distance"] == 2116  # no registered model: the decoder's own fields


def test_tts_topic_must_name_the_same_device() -> None:
    error = rejected("tts", "valid/em310_udl_uplink.json", topic="v3/futian-bins@ttn/devices/other/up")
    assert error.reason == "device_mismatch" and error.detail.startswith("end_device_ids.device_id:")


@pytest.mark.parametrize(
    ("fixture", "reason", "field"),
    [
        ("ldds75_invalid_reading.json", "sensor_fault", "uplink_message.decoded_payload.Distance"),
        ("no_decoded_payload.json", "missing_field", "uplink_message.decoded_payload"),
        ("mac_only_without_f_port.json", "unsupported_message", "uplink_message.f_port"),
        ("received_at_without_offset.json", "invalid_field", "uplink_message.received_at"),
        ("distance_not_a_number.json", "invalid_field", "uplink_message.decoded_payload.distance"),
        ("missing_device_ids.json", "missing_field", "end_device_ids"),
    ],
)
def test_tts_rejects_with_a_reason_naming_the_field(fixture: str, reason: str, field: str) -> None:
    error = rejected("tts", f"invalid/{fixture}")
    assert error.reason == reason and error.detail.startswith(field + ":"), error.detail


# --- ChirpStack -----------------------------------------------------------------------------------


def test_chirpstack_v4_uplink_uses_the_deduplication_id_and_nanosecond_time() -> None:
    event = only("chirpstack", "valid/v4_em310_up.json")
    assert event.event_id == "3ac7e3c4-4401-4b8d-9386-a5c902f9202d" and event.source == "chirpstack"
    assert event.device_id == "em310-bin-0042" and event.kind == "bin"
    assert event.event_time_ms == 1_795_669_201_775
    assert event.attributes == {
        "distance_mm": 2100,
        "battery_pct": 91,
        "tilted": False,
        "f_port": 85,
        "f_cnt": 1288,
        "rssi_dbm": -96,
        "snr_db": 7.2,
        "gateways": 1,
    }
    assert event.location is None  # rxInfo positions are the gateways', not the bin's


def test_chirpstack_v3_with_object_and_with_object_json_and_base64_dev_eui() -> None:
    dragino = only("chirpstack", "valid/v3_json_v3_object.json")
    assert dragino.device_id == "ldds75-bin-0007" and dragino.event_time_ms == 1_795_669_202_120
    assert dragino.attributes["distance_mm"] == 1187 and dragino.attributes["temperature_c"] == 19.75
    assert dragino.attributes["snr_db"] == 8.8
    milesight = only("chirpstack", "valid/v3_json_objectJSON.json", lorawan_device_id="eui")
    assert milesight.device_id == "24E124713C123456" and milesight.attributes["distance"] == 2088
    by_name = only("chirpstack", "valid/v3_json_objectJSON.json")
    assert (
        by_name.attributes["distance_mm"] == 2088
        and by_name.event_id == only("chirpstack", "valid/v3_json_objectJSON.json").event_id
    )


def test_chirpstack_edge_cases() -> None:
    no_time = only("chirpstack", "edge/v4_no_time_uses_ns_time.json")
    assert no_time.event_time_ms == 1_795_669_204_250 and "time_source" not in no_time.attributes
    extra = only("chirpstack", "edge/v4_first_uplink_no_fcnt_unknown_keys.json")
    assert extra.attributes["f_cnt"] == 0 and extra.attributes["gateways"] == 0


@pytest.mark.parametrize(
    "fixture", ["edge/v4_no_time_anywhere.json", "edge/v3_no_rx_info_no_published_at.json"]
)
def test_chirpstack_uplink_without_any_time_is_timed_on_receipt_and_says_so(fixture: str) -> None:
    event = only("chirpstack", fixture)
    assert event.event_time_ms == RECEIVED_MS and event.attributes["time_source"] == "received"
    assert event.attributes["distance_mm"] == 2050


def test_chirpstack_data_uplink_without_f_port_is_decoded() -> None:
    event = only("chirpstack", "edge/v4_object_without_f_port.json")
    assert event.attributes["distance_mm"] == 1990 and "f_port" not in event.attributes


def test_chirpstack_topic_must_name_the_same_dev_eui() -> None:
    error = rejected(
        "chirpstack", "valid/v4_em310_up.json", topic="application/a/device/0101010101010101/event/up"
    )
    assert error.reason == "device_mismatch" and error.detail.startswith("deviceInfo.devEui:")
    topic = "application/a/device/24E124713C123456/event/up"
    assert codec_for("chirpstack").decode(
        topic, (DATA / "chirpstack/valid/v4_em310_up.json").read_bytes(), RECEIVED_MS
    )


@pytest.mark.parametrize(
    ("fixture", "reason", "field"),
    [
        ("v4_without_deduplication_id.json", "missing_field", "deduplicationId"),
        ("v4_bad_dev_eui.json", "invalid_field", "deviceInfo.devEui"),
        ("v3_object_json_not_json.json", "invalid_field", "objectJSON"),
        ("v4_port_zero.json", "unsupported_message", "fPort"),
        ("v4_without_object.json", "missing_field", "object"),
        ("neither_version.json", "missing_field", "deviceInfo"),
    ],
)
def test_chirpstack_rejects_with_a_reason_naming_the_field(fixture: str, reason: str, field: str) -> None:
    error = rejected("chirpstack", f"invalid/{fixture}")
    assert error.reason == reason and error.detail.startswith(field + ":"), error.detail


# --- SenML ----------------------------------------------------------------------------------------


def test_senml_rfc8428_examples() -> None:
    # A full device URN with no base name names the device; its unit says what it measures.
    [single] = decode("senml", "valid/rfc8428_single_datapoint.json", topic="senml/thermo-1")
    assert single.device_id == "urn:dev:ow:10e2073a01080063" and single.event_time_ms == RECEIVED_MS
    assert single.attributes == {"temperature_c": 23.1}
    [pair] = decode("senml", "valid/rfc8428_multiple_datapoints.json")
    assert pair.device_id == "urn:dev:ow:10e2073a01080063" and pair.kind == "power"
    assert pair.attributes == {"voltage_v": 120.1, "current_ma": 1200}
    series = decode("senml", "valid/rfc8428_multiple_measurements.json")
    assert [e.event_time_ms for e in series] == [
        1_276_020_076_001 + offset * 1000 for offset in (-5, -4, -3, -2, -1, 0)
    ]
    assert series[-1].attributes == {"voltage_v": 120.1, "current_ma": 1700}
    assert series[0].attributes == {"current_ma": 1200}


@pytest.mark.parametrize(
    ("name", "device", "attribute"),
    [
        ("urn:dev:ow:10e2073a01080063:temp", "urn:dev:ow:10e2073a01080063", "temperature_c"),
        ("urn:dev:ow:264437f5000000ed_temperature", "urn:dev:ow:264437f5000000ed", "temperature_c"),
        ("urn:dev:mac:0024befffe804ff1", "urn:dev:mac:0024befffe804ff1", "temperature_c"),
        ("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66/temperature",
         "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", "temperature_c"),
        ("sensors/room-1/temperature", "sensors/room-1", "temperature_c"),
        ("2001:db8::3", "2001:db8::3", "temperature_c"),
        ("temperature", "thermo-1", "temperature_c"),  # a plain word: the topic names the device
    ],
)
def test_senml_names_without_base_name_split_into_device_and_measurement(
    name: str, device: str, attribute: str
) -> None:
    # Devices not registered: the split comes from the name's structure alone.
    codec = codec_for("senml", DeviceRegistry([]))
    pack = f'[{{"n": "{name}", "u": "Cel", "v": 21.5}}]'.encode()
    [event] = codec.decode("senml/thermo-1", pack, RECEIVED_MS)
    assert event.device_id == device and event.attributes == {attribute: 21.5}


def test_senml_base_name_alone_names_the_device_without_its_separator() -> None:
    pack = b'[{"bn": "air-ft-0009:", "bu": "ug/m3", "v": 35}, {"bn": "odour-ft-0003/", "u": "Cel", "v": 24}]'
    air, odour = codec_for("senml").decode("senml/x", pack, RECEIVED_MS)
    assert (air.device_id, air.kind, air.attributes) == ("air-ft-0009", "air", {"value_ugm3": 35})
    assert (odour.device_id, odour.attributes) == ("odour-ft-0003", {"temperature_c": 24})


def test_senml_registered_device_ids_decide_the_split() -> None:
    registry = DeviceRegistry([DeviceSettings(device_id="hall:a", kind="air")])
    codec = codec_for("senml", registry)
    pack = b'[{"n": "hall:a:pm2_5", "u": "ug/m3", "v": 12}, {"n": "hall:a", "u": "%RH", "v": 40}]'
    [event] = codec.decode("senml/x", pack, RECEIVED_MS)
    assert event.device_id == "hall:a" and event.attributes == {"pm25_ugm3": 12, "humidity_pct": 40}


def test_senml_name_map_reaches_the_attributes_rules_read() -> None:
    [event] = decode("senml", "edge/air_names_and_units.json")
    assert event.device_id == "air-ft-0009" and event.kind == "air"
    # pm2_5 without a unit takes the map's ug/m3; PM10 in mg/m3 is converted; temp is temperature.
    assert event.attributes == {"pm25_ugm3": 35, "pm10_ugm3": 80.0, "temperature_c": 18.5, "co2_ppm": 640}


def test_senml_pm2_5_reaches_the_air_quality_rule() -> None:
    # A day of 10-minute PM2.5 readings in one pack: 144 records of one measurement at different times.
    start_s = RECEIVED_MS // 1000 - 86_400
    records = [{"bn": "air-ft-0009:", "bt": start_s, "bu": "ug/m3", "n": "pm2_5", "v": 61.5}]
    records += [{"n": "pm2_5", "t": minute * 60, "v": 61.5} for minute in range(10, 24 * 60, 10)]
    events = codec_for("senml").decode("senml/air", json.dumps(records).encode(), RECEIVED_MS)
    assert len(events) == 144 and {e.kind for e in events} == {"air"}
    [opened] = run_rules(AirQualityRule(AirQualitySettings()), events)
    assert opened.type == "air_quality_exceedance" and opened.device_id == "air-ft-0009"
    assert opened.evidence.details["pollutant"] == "pm25_ugm3"


@pytest.mark.parametrize(
    ("record", "attributes"),
    [
        ('{"n": "batt", "u": "V", "v": 3.6}', {"battery_v": 3.6}),  # the record's unit decides
        ('{"n": "battery", "u": "%EL", "v": 87}', {"battery_pct": 87}),
        ('{"n": "battery", "v": 3.6}', {"battery": 3.6}),  # volts or percent? not guessed
        ('{"n": "NH3", "u": "mg/m3", "v": 1.2}', {"nh3_mgm3": 1.2}),  # a unit the odour rules read
        ('{"n": "hum", "u": "%", "v": 55}', {"humidity_pct": 55}),
    ],
)
def test_senml_mapped_names_keep_what_the_record_unit_says(record: str, attributes: dict[str, float]) -> None:
    pack = f'[{{"bn": "odour-ft-0003:"}}, {record}]'.encode()
    [event] = codec_for("senml").decode("senml/x", pack, RECEIVED_MS)
    assert event.attributes == attributes


def test_senml_route_name_map_extends_and_overrides_the_shipped_one() -> None:
    names = {"dust": {"measurement": "pm10", "unit": "ug/m3"}, "temp": "water_temperature"}
    codec = codec_for("senml", senml_names=names)
    pack = b'[{"bn": "air-ft-0009:", "n": "dust", "v": 51}, {"n": "temp", "u": "Cel", "v": 9}]'
    [event] = codec.decode("senml/x", pack, RECEIVED_MS)
    assert event.attributes == {"pm10_ugm3": 51, "water_temperature_c": 9}


def test_senml_positions_by_measurement_name_and_base_only_records() -> None:
    pack = (b'[{"bn": "air-ft-0009:"}, {"n": "latitude", "v": 22.5465}, {"n": "longitude", "v": 114.0519},'
            b' {"n": "pm10", "u": "ug/m3", "v": 20}]')
    unplaced = DeviceRegistry([DeviceSettings(device_id="air-ft-0009", kind="air")])
    [event] = codec_for("senml", unplaced).decode("senml/x", pack, RECEIVED_MS)
    assert event.location == Location(lat=22.5465, lon=114.0519) and event.attributes == {"pm10_ugm3": 20}


def test_senml_position_from_a_network_does_not_move_a_fixed_asset() -> None:
    # Network geolocation added to the pack, hundreds of metres off the registered air-ft-0009.
    pack = (b'[{"bn": "air-ft-0009:", "n": "pm2_5", "u": "ug/m3", "v": 20}, {"n": "locOrigin", "vs": "LORA"},'
            b' {"n": "latitude", "u": "lat", "v": 22.5501}, {"n": "longitude", "u": "lon", "v": 114.0488}]')
    registry = DeviceRegistry(fixture_devices())
    [event] = codec_for("senml", registry).decode("senml/x", pack, RECEIVED_MS)
    assert registry.enrich(event).location == Location(lat=22.5465, lon=114.0519)
    [moving] = codec_for("senml", registry, device_position="network").decode("senml/x", pack, RECEIVED_MS)
    assert registry.enrich(moving).location == Location(lat=22.5501, lon=114.0488)


def test_senml_one_event_per_device_and_time_with_units_in_the_names() -> None:
    [event] = decode("senml", "valid/toilet_odour_pack.json")
    assert event.device_id == "odour-ft-0003" and event.kind == "odour"
    assert event.event_time_ms == 1_795_669_200_000
    assert event.attributes == {"nh3_ppm": 1.8, "h2s_ppm": 0.06, "temperature_c": 27.4, "humidity_pct": 81}


def test_senml_relative_times_location_and_non_numeric_values() -> None:
    earlier, now = decode("senml", "edge/relative_times_and_location.json")
    assert earlier.event_time_ms == RECEIVED_MS - 60_000 and earlier.attributes == {"pm25_ugm3": 35}
    assert now.event_time_ms == RECEIVED_MS
    assert now.attributes == {"pm25_ugm3": 41, "door_open": False, "firmware": "2.4.1"}
    # air-ft-0009 is registered with a position: the pack's lat/lon count only for a moving device.
    assert now.location is None
    [_, moving] = decode("senml", "edge/relative_times_and_location.json", device_position="network")
    assert moving.location == Location(lat=22.5465, lon=114.0519)


def test_senml_base_value_unit_conversion_sums_and_unknown_units() -> None:
    [event] = decode("senml", "edge/base_value_kelvin_and_unknown_unit.json")
    assert event.attributes == {
        "temperature_c": pytest.approx(21.5),
        "turbidity": pytest.approx(276.35),
        "energy_sum_kwh": 1.52,
        "units": {"turbidity": "NTU"},
    }


def test_senml_without_base_name_takes_the_device_from_the_topic() -> None:
    [event] = decode("senml", "edge/no_base_name_device_from_topic.json", topic="senml/bin-0101")
    assert event.device_id == "bin-0101" and event.kind == "bin"
    assert event.attributes == {"fill_pct": 64, "battery_pct": 87}


@pytest.mark.parametrize(
    ("fixture", "reason", "field"),
    [
        ("not_an_array.json", "invalid_field", "payload"),
        ("empty_pack.json", "empty_batch", "payload"),
        ("two_values.json", "invalid_field", "[0]"),
        ("must_understand_field.json", "unknown_field", "[0].rt_"),
        ("newer_version.json", "invalid_field", "[0].bver"),
        ("name_with_space.json", "invalid_field", "[0].n"),
        ("no_value.json", "missing_field", "[0].v"),
        ("value_is_text.json", "invalid_field", "[0].v"),
        ("same_measurement_twice.json", "invalid_field", "[1].n"),
    ],
)
def test_senml_rejects_with_a_reason_naming_the_field(fixture: str, reason: str, field: str) -> None:
    error = rejected("senml", f"invalid/{fixture}")
    assert error.reason == reason and error.detail.startswith(field + ":"), error.detail


# --- every format: each valid and edge fixture decodes, each invalid one is rejected --------------


@pytest.mark.parametrize(
    "path",
    [p for name in TOPICS for group in ("valid", "edge") for p in fixtures(name, group)],
    ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}/{p.name}",
)
def test_every_valid_fixture_decodes(path: Path) -> None:
    name = path.parent.parent.name
    assert decode(name, path)


@pytest.mark.parametrize(
    "path",
    [p for name in TOPICS for p in fixtures(name, "invalid")],
    ids=lambda p: f"{p.parent.parent.name}/{p.name}",
)
def test_every_invalid_fixture_is_rejected_naming_a_field(path: Path) -> None:
    name = path.parent.parent.name
    with pytest.raises(CodecError) as caught:
        decode(name, path)
    field, _, sentence = caught.value.detail.partition(": ")
    assert field and sentence and " " not in field, caught.value.detail
