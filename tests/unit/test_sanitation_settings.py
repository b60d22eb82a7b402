"""Sanitation settings: the shipped configuration loads, typos and bad standards are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core.settings import ConfigError, load_settings


def test_shipped_configuration_has_the_issue_defaults():
    rules = load_settings().rules
    assert rules.bin_near_full.horizon_s == 7200 and rules.bin_fire.open_c == 60
    assert rules.bin_tilt.open_deg == 45 and rules.water_black_odour.consecutive == 3
    assert rules.device_offline.silence_factor == 3
    limits = rules.air_quality.standards[rules.air_quality.standard]
    assert (limits.pm25_24h_ugm3, limits.pm10_24h_ugm3) == (60, 120)
    assert rules.air_quality.standards["GB3095-2012"].pm25_24h_ugm3 == 75


def write(tmp_path: Path, rules: dict) -> Path:
    path = tmp_path / "citywatch.yaml"
    path.write_text(yaml.safe_dump({"rules": rules}))
    return path


def test_a_misspelt_setting_is_refused_with_its_name(tmp_path):
    with pytest.raises(ConfigError, match=r"bin_fire\.open_celsius"):
        load_settings(write(tmp_path, {"bin_fire": {"open_celsius": 55}}))


def test_an_unknown_air_standard_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="GB3095-1996"):
        load_settings(write(tmp_path, {"air_quality": {"standard": "GB3095-1996"}}))


def test_a_new_standard_can_be_added_in_configuration(tmp_path):
    standards = {"local-2027": {"pm25_24h_ugm3": 50, "pm10_24h_ugm3": 100}}
    rules = load_settings(write(tmp_path, {"air_quality": {"standard": "local-2027",
                                                           "standards": standards}})).rules
    assert rules.air_quality.standards["local-2027"].pm25_24h_ugm3 == 50


def test_zone_thresholds_load(tmp_path):
    zones = {"market": {"bin_overflow": {"open_pct": 80}}}
    settings = load_settings(write(tmp_path, {"zone_thresholds": zones}))
    assert settings.rules.zone_thresholds["market"]["bin_overflow"]["open_pct"] == 80
