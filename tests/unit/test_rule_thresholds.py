"""Rule thresholds per device, zone and kind: one resolver, overrides checked at load, and sensor-fault
readings hidden only from the rules that judge the faulty attributes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from core.models import ViolationStatus
from core.sanitation_settings import BinFireSettings, ImplausibleReadingSettings, StuckSensorSettings
from core.settings import BinOverflowSettings, ConfigError, DeviceSettings, RuleSettings, load_settings
from processors.catalogue import build_rules
from processors.devices import Thresholds
from processors.rules.bin_fire import BinFireRule
from processors.rules.bin_overflow import BinOverflowRule
from processors.rules.implausible_reading import ImplausibleReadingRule
from processors.rules.stuck_sensor import StuckSensorRule
from tests.support.events import T0_MS, reading
from tests.support.rules import Registry, run, run_all


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "citywatch.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# --- checked at load -------------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "message"), [
    ({"rules": {"kind_thresholds": {"air": {"stuck_sensr": {"readings": 40}}}}},
     r"rules\.kind_thresholds: air\.stuck_sensr: unknown rule 'stuck_sensr' "
     r"\(did you mean 'stuck_sensor'\?\)"),
    ({"rules": {"zone_thresholds": {"market": {"bin_overflow": {"open_pc": 80}}}}},
     r"rules\.zone_thresholds: market\.bin_overflow\.open_pc: bin_overflow has no setting 'open_pc' that "
     r"can be overridden \(did you mean 'open_pct'\?"),
    ({"rules": {"zone_thresholds": {"market": {"bin_overflow": {"open_pct": 120}}}}},
     r"market\.bin_overflow\.open_pct: must be at most 100, got 120"),
    ({"rules": {"kind_thresholds": {"air": {"sensor_stuck": {"readings": 1}}}}},
     r"air\.sensor_stuck\.readings: must be at least 2, got 1"),
    ({"rules": {"kind_thresholds": {"bin": {"bin_overflow": {"consecutive": 2.5}}}}},
     r"bin\.bin_overflow\.consecutive: must be a whole number, got 2\.5"),
    ({"rules": {"kind_thresholds": {"bin": {"bin_overflow": {"state_ttl_s": 60}}}}},
     r"bin\.bin_overflow\.state_ttl_s: bin_overflow has no setting 'state_ttl_s'"),
    ({"devices": [{"device_id": "bin-1", "kind": "bin", "thresholds": {"bin_fire": {"consecutive": 0}}}]},
     r"devices\.0\.thresholds: bin_fire\.consecutive: must be at least 1, got 0"),
    ({"traffic": {"cameras": [{"device_id": "cam-1", "zones": [
        {"name": "walk", "type": "sidewalk", "thresholds": {"illegal_parking": {"dwell_s": 0}}}]}]}},
     r"traffic\.cameras\.0\.zones\.0\.thresholds: illegal_parking\.dwell_s: must be greater than 0, got 0"),
    ({"rules": {"stuck_sensor": {"hide_suspect_from": ["bin_overflow", "bin_fires"]}}},
     r"stuck_sensor\.hide_suspect_from: unknown rule 'bin_fires'"),
])
def test_a_bad_override_is_a_configuration_error_naming_its_path(tmp_path, config, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, config))


def test_a_rule_may_be_named_by_its_section_or_its_violation_type(tmp_path):
    settings = load_settings(write(tmp_path, {"rules": {"kind_thresholds": {
        "air": {"stuck_sensor": {"readings": 40}}, "water": {"sensor_stuck": {"readings": 30}}}}}))
    assert settings.rules.kind_thresholds == {"air": {"sensor_stuck": {"readings": 40}},
                                              "water": {"sensor_stuck": {"readings": 30}}}
    with pytest.raises(ConfigError, match=r"rule 'sensor_stuck' is given twice"):
        load_settings(write(tmp_path, {"rules": {"kind_thresholds": {"air": {
            "stuck_sensor": {"readings": 40}, "sensor_stuck": {"readings": 30}}}}}))


def test_the_shipped_configuration_has_no_override_problem():
    rules = load_settings().rules
    assert rules.kind_thresholds == {} and rules.zone_thresholds == {}


# --- one resolver, one precedence ---------------------------------------------------------------------


def test_precedence_device_then_zone_tag_then_kind_then_default():
    zones = {"market": {"bin_fire": {"open_c": 70}}}
    kinds = {"bin": {"bin_fire": {"open_c": 65}}}
    registry = Registry(
        DeviceSettings(device_id="own", kind="bin", tags={"zone": "market"},
                       thresholds={"bin_fire": {"open_c": 80}}),
        DeviceSettings(device_id="zoned", kind="bin", tags={"zone": "market"}),
        DeviceSettings(device_id="plain", kind="bin"))
    thresholds = Thresholds(registry, zones, kinds)

    def open_c(device_id: str, kind: str = "bin") -> float:
        return thresholds.value("bin_fire", "open_c", 60, device_id=device_id, kind=kind)

    assert (open_c("own"), open_c("zoned"), open_c("plain"), open_c("unregistered")) == (80, 70, 65, 65)
    assert open_c("unregistered", kind="air") == 60
    camera_zone = {"bin_fire": {"open_c": 90}}
    assert thresholds.value("bin_fire", "open_c", 60, device_id="own", kind="bin",
                            camera_zone=camera_zone) == 90


def test_the_levels_merge_setting_by_setting_the_most_specific_winning():
    zones = {"market": {"bin_overflow": {"open_pct": 85, "clear_pct": 40}}}
    kinds = {"bin": {"bin_overflow": {"open_pct": 95, "consecutive": 3}}}
    registry = Registry(
        DeviceSettings(device_id="own", kind="bin", tags={"zone": "market"},
                       thresholds={"bin_overflow": {"clear_pct": 30}}),
        DeviceSettings(device_id="zoned", kind="bin", tags={"zone": "market"}),
        DeviceSettings(device_id="alone", kind="bin", thresholds={"bin_overflow": {"open_pct": 75}}))
    merged = Thresholds(registry, zones, kinds)

    def overflow(device_id: str, kind: str = "bin") -> dict[str, float]:
        return dict(merged.overrides("bin_overflow", device_id, kind))

    assert overflow("own") == {"open_pct": 85, "clear_pct": 30, "consecutive": 3}
    assert overflow("zoned") == {"open_pct": 85, "clear_pct": 40, "consecutive": 3}
    assert overflow("alone") == {"open_pct": 75, "consecutive": 3}
    assert overflow("unregistered", kind="air") == {}
    assert merged.overrides("bin_fire", "own", "bin") == {}
    devices_only = Thresholds(registry)
    assert devices_only.value("bin_overflow", "open_pct", 90, device_id="alone", kind="bin") == 75
    assert devices_only.value("bin_overflow", "clear_pct", 50, device_id="alone", kind="bin") == 50
    assert devices_only.value("bin_overflow", "open_pct", 90, device_id="zoned", kind="bin") == 90
    assert devices_only.overrides("bin_overflow", "alone", "bin") == {"open_pct": 75}


def test_a_bin_judged_with_settings_from_three_levels():
    zones = {"market": {"bin_overflow": {"clear_pct": 40}}}
    kinds = {"bin": {"bin_overflow": {"consecutive": 2}}}
    registry = Registry(DeviceSettings(device_id="bin-1", kind="bin", tags={"zone": "market"},
                                       thresholds={"bin_overflow": {"open_pct": 70}}))
    rule = BinOverflowRule(BinOverflowSettings(), registry, zones, kinds=kinds)
    changes = run(rule, [reading("bin-1", 0, fill_pct=72), reading("bin-1", 60, fill_pct=74),
                              reading("bin-1", 120, fill_pct=45), reading("bin-1", 180, fill_pct=39)])
    # Opened on the second reading at or above 70 (device level, after the kind's two in a row), cleared
    # below 40 (zone level) and not at 45 (the default clear level would be 50).
    assert [(v.status.value, v.updated_time_ms - T0_MS) for v in changes] == [("open", 60_000),
                                                                              ("cleared", 180_000)]


def test_kind_thresholds_reach_every_rule_the_catalogue_builds():
    settings = RuleSettings.model_validate({"kind_thresholds": {"bin": {
        "bin_fire": {"open_c": 45}, "bin_overflow": {"consecutive": 1}}}})
    rules = [rule for rule in build_rules(settings, Registry()) if rule.name in ("bin_fire", "bin_overflow")]
    events = [reading("bin-1", 0, temperature_c=50, fill_pct=95)]
    assert sorted(v.type for v in run_all(rules, events).violations) == ["bin_fire", "bin_overflow"]


# --- stuck readings per kind -----------------------------------------------------------------------------


def calm_air(count: int, step_s: int = 300, device: str = "air-1") -> list:
    return [reading(device, i * step_s, kind="air", pm25_ugm3=8, pm10_ugm3=15) for i in range(count)]


def test_a_calm_hour_of_identical_air_readings_is_not_a_stuck_sensor():
    # Twelve 5-minute readings: one calm hour. Bins are stuck after 12 identical distances.
    assert run(StuckSensorRule(StuckSensorSettings()), calm_air(12)) == []
    bins = [reading("bin-1", i * 300, distance_mm=420) for i in range(12)]
    assert len(run(StuckSensorRule(StuckSensorSettings()), bins)) == 1


def test_air_is_stuck_after_its_own_readings_and_duration():
    rule = StuckSensorRule(StuckSensorSettings())
    assert run(rule, calm_air(36)) == []  # 36 readings span 2 h 55 min: not yet 3 hours
    [stuck] = run(StuckSensorRule(StuckSensorSettings()), calm_air(37))
    assert stuck.evidence.details["readings"] == 36 and stuck.evidence.details["min_duration_s"] == 10800
    # A sensor reporting every minute needs three hours too, not 36 minutes.
    assert run(StuckSensorRule(StuckSensorSettings()), calm_air(100, step_s=60)) == []


def test_kind_thresholds_win_over_the_rules_kind_defaults_and_devices_over_both():
    kinds = {"air": {"sensor_stuck": {"readings": 6, "min_duration_s": 0}}}
    assert len(run(StuckSensorRule(StuckSensorSettings(), None, None, kinds=kinds), calm_air(6))) == 1
    registry = Registry(DeviceSettings(device_id="air-1", kind="air",
                                       thresholds={"sensor_stuck": {"readings": 10}}))
    assert run(StuckSensorRule(StuckSensorSettings(), registry, None, kinds=kinds), calm_air(9)) == []


# --- which rules a suspect reading is hidden from --------------------------------------------------------


DEPTH = Registry(DeviceSettings(device_id="bin-1", kind="bin", install={"bin_depth_mm": 1000}))


def frozen_bin_on_fire() -> list:
    # The distance freezes at 95% full while the temperature rises: the fire is real.
    return [reading("bin-1", i * 600, distance_mm=50, temperature_c=20 + 15 * i) for i in range(6)]


def test_a_stuck_distance_is_hidden_from_the_fill_rules_but_not_from_the_fire_rule():
    rules = [StuckSensorRule(StuckSensorSettings(readings=2)), BinOverflowRule(BinOverflowSettings(), DEPTH),
             BinFireRule(BinFireSettings(), DEPTH)]
    out = run_all(rules, frozen_bin_on_fire())
    types = [(v.type, v.status) for v in out.violations]
    assert ("bin_fire", ViolationStatus.OPEN) in types
    assert "bin_overflow" not in {v.type for v in out.violations}  # every reading after the first is stuck
    assert len(out.suspect_events) == 5


def test_a_stuck_reading_can_be_hidden_from_every_rule():
    rules = [StuckSensorRule(StuckSensorSettings(readings=2, hide_suspect_from=["*"])),
             BinFireRule(BinFireSettings(), DEPTH)]
    assert {v.type for v in run_all(rules, frozen_bin_on_fire()).violations} == {"sensor_stuck"}


def test_an_implausible_distance_is_hidden_from_the_fill_rules_only():
    rules = [ImplausibleReadingRule(ImplausibleReadingSettings(), DEPTH),
             BinOverflowRule(BinOverflowSettings(consecutive=1), DEPTH),
             BinFireRule(BinFireSettings(), DEPTH)]
    out = run_all(rules, [reading("bin-1", 0, distance_mm=1500, temperature_c=75)])
    assert sorted(v.type for v in out.violations) == ["bin_fire", "sensor_implausible"]


def test_hide_suspect_from_takes_either_name_of_a_rule():
    rules = [StuckSensorRule(StuckSensorSettings(readings=2, hide_suspect_from=["air_quality"]))]
    assert rules[0].hidden_from == frozenset({"air_quality_exceedance"})
