"""An incident starts when it began and ends when it ended, whatever evidence the rule keeps (docs/model.md
lists what start and end mean per rule)."""

from __future__ import annotations

from core.models import ViolationStatus
from core.sanitation_settings import (
    AirQualitySettings,
    BinFireSettings,
    ConstructionDustSettings,
    StuckSensorSettings,
)
from core.settings import BinOverflowSettings
from processors.rules.air_quality import AirQualityRule
from processors.rules.bin_fire import BinFireRule
from processors.rules.bin_overflow import BinOverflowRule
from processors.rules.construction_dust import ConstructionDustRule
from processors.rules.stuck_sensor import StuckSensorRule
from tests.support.events import T0_MS, reading
from tests.support.rules import run, tagged
from tests.support.traffic import run as run_traffic
from tests.support.traffic import track


def dusty_site(clean_minutes: int, dusty_minutes: int) -> list:
    values = [100] * clean_minutes + [400] * dusty_minutes
    return [tagged(reading("dust-1", m * 60, kind="air", pm10_ugm3=v), site="construction")
            for m, v in enumerate(values)]


def test_construction_dust_starts_when_the_hourly_mean_went_above_the_limit():
    events = dusty_site(60, 60)
    [opened] = run(ConstructionDustRule(ConstructionDustSettings()), events)
    # The mean of the last hour first exceeds 150 on this reading: the exceedance began there.
    assert opened.start_time_ms == opened.updated_time_ms
    assert opened.evidence.details["pm10_1h_mean"] > 150
    # The evidence is the newest readings (bounded), not where the start comes from.
    assert len(opened.evidence.event_ids) == 10 and opened.evidence.event_ids[-1] == next(
        e.event_id for e in events if e.event_time_ms == opened.start_time_ms)


def test_air_quality_starts_when_the_daily_mean_became_valid_and_above_the_limit():
    events = [reading("air-1", m * 60, kind="air", pm25_ugm3=90, pm10_ugm3=60) for m in range(0, 21 * 60, 10)]
    [opened] = run(AirQualityRule(AirQualitySettings()), events)
    first_valid = next(e for e in events if e.event_time_ms >= T0_MS + 19 * 3_600_000)
    assert opened.start_time_ms == opened.updated_time_ms == first_valid.event_time_ms


def test_a_level_rule_starts_at_the_first_reading_of_its_run_whatever_consecutive_is():
    events = [reading("bin-1", i * 60, temperature_c=70) for i in range(5)]
    for consecutive in (1, 3, 5):
        [opened] = run(BinFireRule(BinFireSettings(consecutive=consecutive)), events)
        assert opened.start_time_ms == T0_MS
        assert len(opened.evidence.event_ids) == consecutive


def test_bin_overflow_starts_at_the_first_full_reading():
    events = [reading("bin-1", i * 60, fill_pct=95) for i in range(3)]
    [opened] = run(BinOverflowRule(BinOverflowSettings(consecutive=3)), events)
    assert opened.start_time_ms == T0_MS and opened.updated_time_ms == events[2].event_time_ms


def test_a_stuck_sensor_starts_at_its_first_identical_reading_not_its_oldest_kept_one():
    events = [reading("air-1", i * 300, kind="air", pm25_ugm3=8, pm10_ugm3=15) for i in range(40)]
    [opened] = run(StuckSensorRule(StuckSensorSettings()), events)
    # 36 readings are kept as evidence; the identical run began with the first.
    assert len(opened.evidence.event_ids) == 36 and opened.evidence.event_ids[0] != events[0].event_id
    assert opened.start_time_ms == T0_MS and opened.evidence.details["identical_since_ms"] == T0_MS
    assert opened.violation_id == run(StuckSensorRule(StuckSensorSettings()), events[:37])[0].violation_id


def test_a_lost_parked_car_ends_when_it_was_last_known_to_stand_there():
    events = [track(0, "car1", zones=["sidewalk_west"], stationary=True),
              track(450, "car1", zones=["sidewalk_west"], stationary=True), track(2000, "other")]
    opened, cleared = run_traffic(events, ["illegal_parking"])
    assert cleared.status is ViolationStatus.CLEARED
    assert cleared.evidence.details["cleared_because"] == "track_lost"
    assert opened.start_time_ms == T0_MS and cleared.end_time_ms == T0_MS + 450_000
