"""Sensor minutes and minutes out of standard (docs/denominators.md), worked out by hand: the time from
each reading the rule judged to the device's next one, at most `max_gap_intervals` expected intervals,
out of standard when the rule held the device out of standard after the first of the two readings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.models import Event
from core.sanitation_settings import AirQualitySettings, ToiletOdourSettings, WaterBlackOdourSettings
from core.settings import BinOverflowSettings, DeviceSettings
from processors.engine import Engine
from processors.rule import Rule
from processors.rules.air_quality import AirQualityRule
from processors.rules.bin_overflow import BinOverflowRule
from processors.rules.toilet_odour import ToiletOdourRule
from processors.rules.water_black_odour import WaterBlackOdourRule
from tests.support.events import reading
from tests.support.rules import Registry, tagged

HOUR_S = 3600


def counted(rule: Rule[Any], events: Sequence[Event]) -> dict[tuple[str, str, str], float]:
    """Every total after the events are judged: (local day, device, counter) -> value."""
    engine = Engine([rule], allowed_lateness_ms=0, time_zone="Asia/Shanghai")
    engine.process(events, now_wall_ms=0)
    engine.drain()
    return {(t.day, t.device_id, t.counter): t.value for t in engine.exposures.totals()}


def registry(*devices: tuple[str, str, float | None]) -> Registry:
    return Registry(*(DeviceSettings(device_id=device, kind=kind, expected_interval_s=interval)
                      for device, kind, interval in devices))


def test_bin_minutes_run_from_reading_to_reading_capped_and_overflowing_while_the_violation_is_open() -> None:
    # Every 10 minutes: a gap counts up to 15 minutes (max_gap_intervals 1.5).
    rule = BinOverflowRule(BinOverflowSettings(), registry(("bin-1", "bin", 600)))
    fills = [(0, 50), (600, 95), (1200, 95), (1800, 95), (2400, 20), (4200, 20), (5400, 20), (6240, 20)]
    events = [reading("bin-1", at_s, fill_pct=fill) for at_s, fill in fills]
    events.append(reading("bin-1", 4800, battery_pct=80))  # no fill: not a reading of this rule
    # Minutes: 10 + 10 (not yet open) + 10 + 10 (open from 1200 to the clear at 2400) + 15 + 15 (capped)
    # + 14 (late, but within the 15).
    assert counted(rule, events) == {
        ("2025-11-26", "bin-1", "bin_minutes"): 84.0,
        ("2025-11-26", "bin-1", "bin_overflow_minutes"): 20.0,
    }


def test_a_bin_without_an_expected_interval_counts_up_to_an_hour_between_readings() -> None:
    rule = BinOverflowRule(BinOverflowSettings())
    events = [reading("bin-2", 0, fill_pct=10), reading("bin-2", 2 * HOUR_S, fill_pct=10),
              reading("bin-2", 2 * HOUR_S + 90, fill_pct=10)]
    assert counted(rule, events) == {("2025-11-26", "bin-2", "bin_minutes"): 61.5}


def test_toilet_odour_minutes_are_out_of_standard_while_a_gas_is_over_its_limit() -> None:
    rule = ToiletOdourRule(ToiletOdourSettings(), registry(("wc-1", "odour", 300)))
    nh3 = [(0, 0.5), (300, 1.5), (600, 1.5), (900, 2.0), (1200, 0.8), (1500, 0.8)]
    events = [reading("wc-1", at_s, kind="odour", nh3_mgm3=value) for at_s, value in nh3]
    events += [reading("wc-1", 900.5, kind="odour", h2s_mgm3=0.02),  # one spike: opens nothing
               reading("wc-1", 1350, kind="odour", temperature_c=20)]  # no gas: not a reading
    # Open from the second reading over 1.0 (600) to the clear at 1200: 10 of 25 minutes.
    assert counted(rule, events) == {
        ("2025-11-26", "wc-1", "odour_sensor_minutes"): 25.0,
        ("2025-11-26", "wc-1", "odour_out_of_standard_minutes"): 10.0,
    }


def test_water_minutes_are_per_probe_and_out_of_standard_while_the_body_is_flagged() -> None:
    probes = registry(("w1", "water", 1200), ("w2", "water", 1200))
    rule = WaterBlackOdourRule(WaterBlackOdourSettings(), probes)
    black, clean = {"do_mgl": 1.0}, {"do_mgl": 6.0}
    readings = [(0, "w1", black), (600, "w2", black), (1200, "w1", black),  # flagged at 1200
                (1800, "w2", clean), (2400, "w1", clean), (3000, "w2", clean),  # cleared at 3000
                (3600, "w1", clean)]
    events = [tagged(reading(probe, at_s, kind="water", **values), water_body="canal-1")
              for at_s, probe, values in readings]
    assert counted(rule, events) == {
        ("2025-11-26", "w1", "water_sensor_minutes"): 60.0,  # 0-1200, 1200-2400, 2400-3600
        ("2025-11-26", "w1", "water_out_of_standard_minutes"): 40.0,  # after 1200 and after 2400
        ("2025-11-26", "w2", "water_sensor_minutes"): 40.0,  # 600-1800, 1800-3000
        ("2025-11-26", "w2", "water_out_of_standard_minutes"): 20.0,  # after 1800
    }


def test_air_minutes_are_out_of_standard_from_the_reading_whose_24_hour_mean_exceeds_and_split_at_midnight(
) -> None:
    # Hourly from 13:00 local; the 24-hour mean is valid with 20 hours, at the reading of 08:00 next
    # day (hour 19), and 200 ug/m3 of PM2.5 is over every standard's limit.
    rule = AirQualityRule(AirQualitySettings(), registry(("aq-1", "air", 3600)))
    events = [reading("aq-1", hour * HOUR_S, kind="air", pm25_ugm3=200) for hour in range(24)]
    assert counted(rule, events) == {
        ("2025-11-26", "aq-1", "air_sensor_minutes"): 11 * 60.0,  # 13:00 to midnight
        ("2025-11-27", "aq-1", "air_sensor_minutes"): 12 * 60.0,  # midnight to 12:00, the last reading
        ("2025-11-27", "aq-1", "air_out_of_standard_minutes"): 4 * 60.0,  # 08:00 to 12:00
    }
