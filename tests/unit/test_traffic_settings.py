"""The traffic section is validated at load, and schedules mean local time in the city's zone."""

from __future__ import annotations

import zoneinfo

import pytest
import yaml

from core.settings import ConfigError, load_settings
from core.traffic_settings import ScheduleSettings
from processors.zones import Schedule, ZoneMap, dwell_due, in_force_until
from tests.support.events import T0_MS
from tests.support.traffic import TRAFFIC, local_s, traffic_settings


def load(tmp_path, traffic):
    path = tmp_path / "citywatch.yaml"
    path.write_text(yaml.safe_dump({"traffic": traffic}, allow_unicode=True))
    return load_settings(path)


def camera(*zones, intersection="ix-1"):
    cameras = [{"device_id": "cam-1", "intersection": intersection, "zones": list(zones)}]
    return {**TRAFFIC, "cameras": cameras}


@pytest.mark.parametrize(("traffic", "message"), [
    ({**TRAFFIC, "time_zone": "Mars/Olympus"}, "traffic.time_zone"),
    (camera({"name": "s", "type": "stop_line"}), "needs `approach`"),
    (camera({"name": "s", "type": "stop_line", "approach": "south"}), "approach 'south'"),
    (camera({"name": "o", "type": "one_way"}), "allowed_heading_deg"),
    (camera({"name": "o", "type": "one_way", "allowed_heading_deg": 360}), "allowed_heading_deg"),
    (camera({"name": "v", "type": "speed_limit"}), "speed_limit_kmh"),
    (camera({"name": "n", "type": "no_parking", "schedule": "nights"}), "unknown schedule 'nights'"),
    (camera({"name": "n", "type": "no_parking"}, {"name": "n", "type": "sidewalk"}), "zone names repeat"),
    (camera({"name": "n", "type": "parking_lot"}), "type"),
    (camera({"name": "n", "type": "sidewalk", "colour": "red"}), "colour"),
    (camera(intersection="ix-9"), "unknown intersection"),
    ({**TRAFFIC, "schedules": {"x": {"windows": ["19:00-07:00"]}}}, "across midnight"),
    ({**TRAFFIC, "schedules": {"x": {"windows": ["07:00-09:00", "08:00-10:00"]}}}, "overlap"),
    ({**TRAFFIC, "schedules": {"x": {"days": ["monday"]}}}, "days"),
])
def test_bad_traffic_configuration_is_refused_naming_the_field(tmp_path, traffic, message):
    with pytest.raises(ConfigError) as error:
        load(tmp_path, traffic)
    assert message in str(error.value)


def test_the_example_configuration_loads(tmp_path):
    settings = load(tmp_path, TRAFFIC)
    assert settings.traffic.cameras[0].zones[0].name == "stop_north"
    assert settings.traffic.codes.codes["red_light"].points == 6


def test_every_example_config_in_configs_is_valid():
    from pathlib import Path

    configs = Path(__file__).resolve().parents[2] / "configs"
    settings = load_settings(configs / "citywatch.yaml")
    assert settings.traffic.time_zone == "Asia/Shanghai"


def test_schedules_are_local_time_of_the_city():
    shanghai = Schedule("peaks", ScheduleSettings(days=["wed"], windows=["07:00-09:00"]),
                        zoneinfo.ZoneInfo("Asia/Shanghai"))
    seven_local = T0_MS + int(local_s("2025-11-26T07:00") * 1000)
    assert seven_local % 86_400_000 == 23 * 3600 * 1000  # 07:00 in Shanghai is 23:00 UTC the day before
    assert not shanghai.active_at(seven_local - 1) and shanghai.active_at(seven_local)
    assert shanghai.active_at(seven_local + 2 * 3600_000 - 1)
    assert not shanghai.active_at(seven_local + 2 * 3600_000)


def test_windows_touching_at_midnight_merge_into_one_interval():
    nights = Schedule("nights", ScheduleSettings(windows=["00:00-06:00", "22:00-24:00"]),
                      zoneinfo.ZoneInfo("Asia/Shanghai"))
    ten_pm = T0_MS + int(local_s("2025-11-26T22:00") * 1000)
    start, end = next(nights.intervals(ten_pm))
    assert (start, end - start) == (ten_pm, 8 * 3600_000)
    assert in_force_until(nights, ten_pm + 1000) == end
    assert dwell_due(nights, ten_pm + 1000, 300_000) == (ten_pm + 1000, ten_pm + 301_000)


def test_daylight_saving_is_wall_clock_time():
    berlin = Schedule("s", ScheduleSettings(windows=["01:00-04:00"]), zoneinfo.ZoneInfo("Europe/Berlin"))
    # 2025-03-30: clocks go 02:00 -> 03:00, so 01:00-04:00 local lasts two hours.
    from datetime import UTC, datetime
    midnight_utc = int(datetime(2025, 3, 29, 23, 0, tzinfo=UTC).timestamp() * 1000)
    start, end = next(berlin.intervals(midnight_utc))
    assert end - start == 2 * 3600_000


def test_zone_map_finds_zones_phases_and_thresholds():
    zones = ZoneMap(traffic_settings())
    stop = zones.zone("cam-1", "stop_north")
    assert stop is not None and stop.phase == "north_through" and stop.intersection == "ix-1"
    found = zones.zones_of("cam-1", ["slow_lane", "x", "main_road"])
    assert [z.name for z in found] == ["main_road", "slow_lane"]
    slow = zones.zone("cam-1", "slow_lane")
    assert zones.threshold("speeding", "tolerance_pct", 10, device_id="cam-1", kind="track", zone=slow) == 0
    assert zones.threshold("speeding", "tolerance_pct", 10, device_id="cam-1", kind="track", zone=stop) == 10
    assert zones.intersection_of("cam-9") is None and zones.zones_of("cam-9", ["main_road"]) == []


def test_a_registered_camera_gets_the_intersection_tag_it_is_partitioned_by(tmp_path):
    from processors.catalogue import partition_key
    from tests.support.traffic import track

    path = tmp_path / "city.yaml"
    devices = [{"device_id": "cam-1", "kind": "track"}, {"device_id": "cam-2", "kind": "track"}]
    path.write_text(yaml.safe_dump({"traffic": TRAFFIC, "devices": devices}, allow_unicode=True))
    settings = load_settings(path)
    tags = {device.device_id: device.tags for device in settings.devices}
    assert tags == {"cam-1": {"intersection": "ix-1"}, "cam-2": {}}
    from ingest.registry import DeviceRegistry
    enriched = DeviceRegistry(settings.devices).enrich(track(0, "t1"))
    assert partition_key(enriched) == "ix-1"


def test_a_camera_tagged_with_another_intersection_is_refused(tmp_path):
    path = tmp_path / "city.yaml"
    devices = [{"device_id": "cam-1", "kind": "track", "tags": {"intersection": "ix-9"}}]
    path.write_text(yaml.safe_dump({"traffic": TRAFFIC, "devices": devices}, allow_unicode=True))
    with pytest.raises(ConfigError, match="tagged intersection='ix-9'"):
        load_settings(path)
