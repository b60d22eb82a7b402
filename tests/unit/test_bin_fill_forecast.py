"""Fill from ultrasonic distance, and the near-full forecast: robust fit, horizon, emptying."""

from __future__ import annotations

import pytest

from core.models import ViolationStatus
from core.sanitation_settings import BinNearFullSettings
from core.settings import BinOverflowSettings, DeviceSettings
from processors.rules.bin_fill import fill_from_distance
from processors.rules.bin_near_full import BinNearFullRule, fit_fill
from processors.rules.bin_overflow import BinOverflowRule
from tests.support.events import T0_MS, reading
from tests.support.rules import Registry, run, run_all

HOUR_S = 3600


def test_fill_from_distance_with_and_without_a_mounting_offset():
    assert fill_from_distance(1000, depth_mm=1000) == 0.0
    assert fill_from_distance(100, depth_mm=1000) == 90.0
    assert fill_from_distance(0, depth_mm=1000) == 100.0
    # Sensor 100 mm above the full line: a distance of 100 mm is a full bin.
    assert fill_from_distance(100, depth_mm=1100, offset_mm=100) == 100.0
    assert fill_from_distance(600, depth_mm=1100, offset_mm=100) == 50.0
    # Clamped: noise beyond the bottom or inside the blind zone.
    assert fill_from_distance(1150, depth_mm=1100, offset_mm=100) == 0.0
    assert fill_from_distance(50, depth_mm=1100, offset_mm=100) == 100.0
    assert fill_from_distance(500, depth_mm=100, offset_mm=100) is None


def test_overflow_is_judged_on_distance_with_the_registered_depth():
    registry = Registry(DeviceSettings(device_id="bin-u", kind="bin",
                                       install={"bin_depth_mm": 1200, "sensor_offset_mm": 200}))
    # 1200 - 300 = 900 of a 1000 mm span: 90%, the threshold.
    events = [reading("bin-u", 0, distance_mm=300), reading("bin-u", 600, distance_mm=250),
              reading("bin-u", 1200, distance_mm=1100)]
    opened, cleared = run(BinOverflowRule(BinOverflowSettings(), registry), events)
    assert opened.evidence.details["fill_pct"] == [90.0, 95.0]
    assert cleared.status is ViolationStatus.CLEARED


def test_distance_without_a_registered_depth_gives_no_fill():
    events = [reading("bin-x", 0, distance_mm=10), reading("bin-x", 600, distance_mm=10)]
    assert run(BinOverflowRule(BinOverflowSettings(), Registry()), events) == []


def points(*fills, step_h=1.0):
    return [(f"e{i}", T0_MS + int(i * step_h * 3_600_000), float(f)) for i, f in enumerate(fills)]


def test_fit_predicts_the_crossing_of_100_percent():
    fit = fit_fill(points(10, 20, 30, 40, 50), outlier_pct=8)
    assert fit.slope_pct_per_h == pytest.approx(10)
    assert fit.predicted_full_ms == T0_MS + 9 * 3_600_000
    assert fit.dropped is None


def test_one_outlier_is_dropped_and_the_refit_ignores_it():
    fit = fit_fill(points(10, 20, 95, 40, 50, 60), outlier_pct=8)
    assert fit.dropped is not None and fit.dropped[0] == "e2"
    assert fit.slope_pct_per_h == pytest.approx(10)
    assert fit.predicted_full_ms == T0_MS + 9 * 3_600_000


def test_ordinary_noise_is_not_taken_for_an_outlier():
    fit = fit_fill(points(10, 22, 29, 41, 50, 59), outlier_pct=8)
    assert fit.dropped is None


def test_a_flat_or_falling_bin_has_no_full_time():
    assert fit_fill(points(40, 40, 40, 40), outlier_pct=8).predicted_full_ms is None


def fills(*values, device="bin-1", step_s=HOUR_S):
    return [reading(device, i * step_s, fill_pct=v) for i, v in enumerate(values)]


def test_forecasts_are_published_per_reading_and_near_full_opens_inside_the_horizon():
    # 10%/h: at 70% (t = 6 h) full is 3 h away; at 80% (t = 7 h) exactly 2 h away: opens.
    events = fills(10, 20, 30, 40, 50, 60, 70, 80)
    out = run_all([BinNearFullRule(BinNearFullSettings())], events)
    [opened] = out.violations
    # It began when the forecast first fell within the horizon; the evidence is the readings fitted,
    # those of the last 4 hours (fit_window_s).
    assert opened.type == "bin_near_full" and opened.start_time_ms == events[7].event_time_ms
    assert opened.evidence.event_ids == [e.event_id for e in events[3:]]
    assert opened.updated_time_ms == events[7].event_time_ms
    assert opened.evidence.details["predicted_full_ms"] == T0_MS + 9 * HOUR_S * 1000
    assert [p.predicted_time_ms for p in out.records][:3] == [None, None, None]
    assert out.records[-1].predicted_time_ms == T0_MS + 9 * HOUR_S * 1000
    assert out.records[-1].type == "bin_full" and out.records[-1].value == 80


def test_start_and_id_do_not_depend_on_how_many_readings_are_fitted():
    events = fills(10, 20, 30, 40, 50, 60, 70, 80)
    [wide] = run(BinNearFullRule(BinNearFullSettings(fit_window_s=8 * HOUR_S)), events)
    [narrow] = run(BinNearFullRule(BinNearFullSettings(fit_window_s=3 * HOUR_S)), events)
    assert len(wide.evidence.event_ids) != len(narrow.evidence.event_ids)
    assert wide.start_time_ms == narrow.start_time_ms == events[7].event_time_ms
    assert wide.violation_id == narrow.violation_id


def test_just_outside_the_horizon_does_not_open():
    # At 70% full is 3 h away: outside a 2 h 59 min horizon.
    settings = BinNearFullSettings(horizon_s=3 * HOUR_S - 60)
    assert run(BinNearFullRule(settings), fills(10, 20, 30, 40, 50, 60, 70)) == []
    settings = BinNearFullSettings(horizon_s=3 * HOUR_S)
    assert len(run(BinNearFullRule(settings), fills(10, 20, 30, 40, 50, 60, 70))) == 1


def test_emptying_clears_the_alert_and_restarts_the_fit():
    events = fills(10, 30, 50, 70, 90, 5, 10)
    out = run_all([BinNearFullRule(BinNearFullSettings())], events)
    opened, cleared = out.violations
    assert cleared.violation_id == opened.violation_id and cleared.end_time_ms == events[5].event_time_ms
    assert out.records[-1].predicted_time_ms is None and out.records[-1].details == {"points": 2}


def test_forecast_is_computed_from_distance_readings_too():
    registry = Registry(DeviceSettings(device_id="bin-u", kind="bin", install={"bin_depth_mm": 1000}))
    events = [reading("bin-u", i * HOUR_S, distance_mm=900 - 100 * i) for i in range(5)]
    out = run_all([BinNearFullRule(BinNearFullSettings(), registry)], events)
    assert out.records[-1].predicted_time_ms == T0_MS + 9 * HOUR_S * 1000


def test_duplicates_do_not_change_the_forecast():
    events = fills(10, 20, 30, 40, 50)
    once = run_all([BinNearFullRule(BinNearFullSettings())], events).records
    twice = run_all([BinNearFullRule(BinNearFullSettings())], events + events[::-1]).records
    assert once == twice


def test_only_the_recent_window_is_fitted():
    # A slow night (2%/h) then a fast morning (10%/h): the forecast follows the morning.
    night = [10 + 2 * h for h in range(8)]
    morning = [night[-1] + 10 * h for h in range(1, 5)]
    out = run_all([BinNearFullRule(BinNearFullSettings())], fills(*night, *morning))
    assert out.records[-1].details["slope_pct_per_h"] == pytest.approx(10)


def test_an_outlier_as_the_newest_reading_does_not_make_the_bin_full_now():
    events = fills(40, 45, 50, 55, 100)
    out = run_all([BinNearFullRule(BinNearFullSettings())], events)
    assert out.records[-1].details["dropped_outlier_event_id"] == events[-1].event_id
    assert out.records[-1].predicted_time_ms == events[0].event_time_ms + 12 * HOUR_S * 1000


def test_the_fit_is_numpy_least_squares():
    import numpy as np

    rng = np.random.default_rng(1)
    hours = np.sort(rng.uniform(0, 10, 30))
    fills = 3 + 2.5 * hours + rng.normal(0, 1, 30)
    (slope, intercept), *_ = np.linalg.lstsq(np.vstack([hours, np.ones_like(hours)]).T, fills, rcond=None)
    readings = [(f"e{i}", T0_MS + int(h * 3_600_000), float(f))
                for i, (h, f) in enumerate(zip(hours, fills, strict=True))]
    fit = fit_fill(readings, outlier_pct=50)  # nothing is an outlier at 50 points
    assert fit.dropped is None
    assert fit.slope_pct_per_h == pytest.approx(slope, rel=1e-6)
    assert fit.predicted_full_ms == pytest.approx(T0_MS + (100 - intercept) / slope * 3_600_000, abs=1000)
