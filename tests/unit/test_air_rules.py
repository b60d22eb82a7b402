"""Air: rolling means in event time, 24-hour exceedance by the standard in force, AQI, site dust."""

from __future__ import annotations

import pytest

from core.models import ViolationStatus
from core.sanitation_settings import AirQualitySettings, ConstructionDustSettings
from processors.rules import air_standards
from processors.rules.air_quality import AirQualityRule
from processors.rules.construction_dust import ConstructionDustRule
from processors.rules.rolling_mean import RollingMean, daily_window, hourly_window
from tests.support.events import T0_MS, reading
from tests.support.rules import run, tagged


def test_rolling_mean_evicts_old_buckets_and_weighs_buckets_equally():
    window = hourly_window()
    window.add(T0_MS, 100)
    window.add(T0_MS + 1_000, 100)  # same minute: one bucket of mean 100
    window.add(T0_MS + 60_000, 10)
    assert window.mean() == pytest.approx(55) and window.coverage == 2
    window.add(T0_MS + 3_600_000 + 60_000, 40)  # the first minute has left the hour
    assert window.coverage == 2 and window.mean() == pytest.approx(25)


def test_rolling_state_is_bounded():
    window = daily_window()
    for minute in range(3 * 24 * 60):
        window.add(T0_MS + minute * 60_000, 1.0)
    assert window.coverage <= 25
    hourly = RollingMean(bucket_ms=60_000, span_ms=3_600_000)
    for second in range(0, 5 * 3600, 10):
        hourly.add(T0_MS + second * 1000, 1.0)
    assert hourly.coverage <= 61


@pytest.mark.parametrize(("table", "pollutant", "concentration", "expected"), [
    ("HJ633-2026", "pm25_ugm3", 35, 50), ("HJ633-2026", "pm25_ugm3", 60, 100),
    ("HJ633-2026", "pm25_ugm3", 61, 101), ("HJ633-2026", "pm25_ugm3", 115, 150),
    ("HJ633-2026", "pm25_ugm3", 250, 300), ("HJ633-2026", "pm10_ugm3", 120, 100),
    ("HJ633-2026", "pm10_ugm3", 420, 300), ("HJ633-2012", "pm25_ugm3", 75, 100),
    ("HJ633-2012", "pm10_ugm3", 150, 100), ("HJ633-2026", "pm25_ugm3", 900, 500),
    ("HJ633-2026", "pm25_ugm3", 0, 0),
])
def test_iaqi_breakpoints_are_versioned(table, pollutant, concentration, expected):
    assert air_standards.iaqi(table, pollutant, concentration) == expected


def test_aqi_categories():
    assert air_standards.category(50) == ("excellent", "优")
    assert air_standards.category(101) == ("lightly_polluted", "轻度污染")
    assert air_standards.category(301) == ("severely_polluted", "严重污染")


def air_day(device, pm25, pm10, hours=24, step_min=10, start_h=0):
    return [reading(device, (start_h * 60 + m) * 60, kind="air", pm25_ugm3=pm25, pm10_ugm3=pm10)
            for m in range(0, hours * 60, step_min)]


def by_pollutant(violations):
    return {v.evidence.details["pollutant"]: v for v in violations}


def test_24h_mean_above_the_2026_limit_opens_with_means_and_aqi():
    violations = run(AirQualityRule(AirQualitySettings()), air_day("air-1", 60.5, 100))
    opened = by_pollutant(violations)["pm25_ugm3"]
    assert list(by_pollutant(violations)) == ["pm25_ugm3"]
    details = opened.evidence.details
    assert details["limit_24h_ugm3"] == 60 and details["standard"] == "GB3095-2026-transition"
    assert details["pm25_ugm3_24h_mean"] == 60.5 and details["pm25_ugm3_1h_valid"] is True
    assert details["aqi"] == 101 and details["aqi_category"] == "lightly_polluted"
    assert opened.type == "air_quality_exceedance" and opened.evidence.event_ids


def test_24h_mean_at_the_limit_is_not_an_exceedance():
    assert run(AirQualityRule(AirQualitySettings()), air_day("air-1", 60, 120)) == []


def test_2012_standard_is_selectable():
    settings = AirQualitySettings(standard="GB3095-2012", aqi_table="HJ633-2012")
    assert run(AirQualityRule(settings), air_day("air-1", 70, 140)) == []
    [opened] = run(AirQualityRule(settings), air_day("air-1", 76, 140))
    assert opened.evidence.details["limit_24h_ugm3"] == 75


def test_no_judgement_before_20_hours_of_data():
    assert run(AirQualityRule(AirQualitySettings()), air_day("air-1", 200, 300, hours=19)) == []
    assert len(run(AirQualityRule(AirQualitySettings()), air_day("air-1", 200, 300, hours=21))) == 2


def test_exceedance_clears_when_the_24h_mean_falls_back():
    events = air_day("air-1", 90, 100) + air_day("air-1", 20, 100, hours=30, start_h=24)
    opened, cleared = run(AirQualityRule(AirQualitySettings()), events)
    assert cleared.violation_id == opened.violation_id and cleared.status is ViolationStatus.CLEARED


def test_unknown_standard_is_a_configuration_error():
    with pytest.raises(ValueError, match="standard"):
        AirQualitySettings(standard="GB3095-1996")


def site(events):
    return [tagged(e, site="construction") for e in events]


def test_construction_dust_1h_pm10_mean_above_limit_at_a_site_sensor():
    events = site(air_day("dust-1", 50, 151, hours=1, step_min=1))
    [opened] = run(ConstructionDustRule(ConstructionDustSettings()), events)
    assert opened.type == "construction_dust" and opened.evidence.details["pm10_1h_mean"] == 151
    # The 45th minute with data is the first valid hour.
    assert opened.updated_time_ms == events[44].event_time_ms


def test_construction_dust_border_and_non_site_sensors():
    assert run(ConstructionDustRule(ConstructionDustSettings()),
               site(air_day("dust-1", 50, 150, hours=2, step_min=1))) == []
    assert run(ConstructionDustRule(ConstructionDustSettings()),
               air_day("air-1", 50, 400, hours=2, step_min=1)) == []


def test_limit_is_overridable_per_zone():
    from core.settings import DeviceSettings
    from tests.support.rules import Registry

    registry = Registry(DeviceSettings(device_id="air-park", kind="air", tags={"zone": "park"}))
    zones = {"park": {"air_quality_exceedance": {"pm25_24h_ugm3": 35}}}
    [opened] = run(AirQualityRule(AirQualitySettings(), registry, zones), air_day("air-park", 40, 60))
    assert opened.evidence.details["limit_24h_ugm3"] == 35
