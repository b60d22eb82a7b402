"""A run of readings "in a row" is broken by a missing report: a device that registered how often it
reports (`expected_interval_s`) and stayed silent for longer than `max_gap_intervals` of it did not send
evidence either way. (Congestion, which knows each detector interval, is in test_congestion.py.)"""

from __future__ import annotations

from core.sanitation_settings import (
    BinFireSettings,
    StuckSensorSettings,
    ToiletOdourSettings,
    WaterBlackOdourSettings,
)
from core.settings import BinOverflowSettings, DeviceSettings
from processors.rules.bin_fire import BinFireRule
from processors.rules.bin_overflow import BinOverflowRule
from processors.rules.stuck_sensor import StuckSensorRule
from processors.rules.toilet_odour import ToiletOdourRule
from processors.rules.water_black_odour import WaterBlackOdourRule
from tests.support.events import reading
from tests.support.rules import Registry, run

EVERY_5_MIN = 300


def registry(device_id: str, kind: str, interval_s: float | None = EVERY_5_MIN) -> Registry:
    return Registry(DeviceSettings(device_id=device_id, kind=kind, expected_interval_s=interval_s))


def at(*minutes: int) -> list[int]:
    return [m * 60 for m in minutes]


def test_bin_overflow_full_full_missing_full_does_not_open():
    events = [reading("bin-1", s, fill_pct=95) for s in at(0, 10)]  # the report at 5 is missing
    bins = registry("bin-1", "bin")
    assert run(BinOverflowRule(BinOverflowSettings(), bins), events) == []
    in_a_row = [reading("bin-1", s, fill_pct=95) for s in at(0, 5)]
    assert len(run(BinOverflowRule(BinOverflowSettings(), bins), in_a_row)) == 1
    # A device without a registered interval cannot miss a report: judged as before.
    assert len(run(BinOverflowRule(BinOverflowSettings(), registry("bin-1", "bin", None)), events)) == 1


def test_a_late_report_within_the_tolerance_is_still_in_a_row():
    events = [reading("bin-1", s, fill_pct=95) for s in (0, 449)]  # 1.5 intervals is 450 s
    assert len(run(BinOverflowRule(BinOverflowSettings(), registry("bin-1", "bin")), events)) == 1
    late = [reading("bin-1", s, fill_pct=95) for s in (0, 451)]
    assert run(BinOverflowRule(BinOverflowSettings(), registry("bin-1", "bin")), late) == []


def test_level_rules_hot_hot_missing_hot_does_not_open():
    events = [reading("bin-1", s, temperature_c=70) for s in at(0, 5, 15)]
    rule = BinFireRule(BinFireSettings(consecutive=3), registry("bin-1", "bin"))
    assert run(rule, events) == []
    events.append(reading("bin-1", 20 * 60, temperature_c=70))
    events.append(reading("bin-1", 25 * 60, temperature_c=70))
    [opened] = run(BinFireRule(BinFireSettings(consecutive=3), registry("bin-1", "bin")), events)
    assert opened.start_time_ms == events[2].event_time_ms  # the run began after the gap


def test_toilet_odour_run_is_broken_by_a_missing_report():
    events = [reading("wc-1", s, kind="odour", nh3_mgm3=2.0) for s in at(0, 2)]
    odour = registry("wc-1", "odour", 60)
    assert run(ToiletOdourRule(ToiletOdourSettings(), odour), events) == []
    assert len(run(ToiletOdourRule(ToiletOdourSettings(), odour),
                   [reading("wc-1", s, kind="odour", nh3_mgm3=2.0) for s in at(0, 1)])) == 1


def test_water_black_and_clean_runs_are_broken_by_a_missing_report():
    probe = registry("probe-1", "water", 600)

    def water(minute: int, do_mgl: float) -> object:
        return reading("probe-1", minute * 60, kind="water", do_mgl=do_mgl)

    black_with_gap = [water(0, 1.0), water(10, 1.0), water(30, 1.0)]
    assert run(WaterBlackOdourRule(WaterBlackOdourSettings(), probe), black_with_gap) == []
    black = [water(0, 1.0), water(10, 1.0), water(20, 1.0)]
    clean_with_gap = [water(30, 6.0), water(40, 6.0), water(60, 6.0)]
    [opened] = run(WaterBlackOdourRule(WaterBlackOdourSettings(), probe), black + clean_with_gap)
    assert opened.status.value == "open"


def test_stuck_sensor_count_starts_again_after_a_missing_report():
    rule_settings = StuckSensorSettings(readings=4)
    bins = registry("bin-1", "bin")
    with_gap = [reading("bin-1", s, distance_mm=420) for s in at(0, 5, 15, 20)]
    assert run(StuckSensorRule(rule_settings, bins), with_gap) == []
    in_a_row = [reading("bin-1", s, distance_mm=420) for s in at(0, 5, 10, 15)]
    assert len(run(StuckSensorRule(rule_settings, bins), in_a_row)) == 1


def test_an_open_stuck_incident_stays_open_across_a_missing_report():
    bins = registry("bin-1", "bin")
    events = [reading("bin-1", s, distance_mm=420) for s in at(0, 5, 10, 60, 65)]
    [opened] = run(StuckSensorRule(StuckSensorSettings(readings=3), bins), events)
    assert opened.status.value == "open"


def test_construction_dust_does_not_count_a_silent_half_hour_as_sampling_time():
    from core.sanitation_settings import ConstructionDustSettings
    from processors.rules.construction_dust import ConstructionDustRule
    from tests.support.rules import tagged

    def dusty(minutes: list[int]) -> list:
        return [tagged(reading("dust-1", m * 60, kind="air", pm10_ugm3=400), site="construction")
                for m in minutes]

    site = Registry(DeviceSettings(device_id="dust-1", kind="air", expected_interval_s=60,
                                   tags={"site": "construction"}))
    # Every minute for 15 minutes, silent for 30, then every minute for 15: the hour spans 60 minutes
    # but was sampled for about 30.
    half_silent = dusty([*range(0, 15), *range(45, 60)])
    assert run(ConstructionDustRule(ConstructionDustSettings(), site), half_silent) == []
    [opened] = run(ConstructionDustRule(ConstructionDustSettings(), site), dusty(list(range(0, 60))))
    assert opened.evidence.details["minutes_covered"] >= 45
    # Without a known interval nothing can be missing: the span counts, as before.
    assert len(run(ConstructionDustRule(ConstructionDustSettings()), half_silent)) == 1
