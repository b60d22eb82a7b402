"""Lid left open (an event-time timer) and public-toilet odour (NH3, H2S in mg/m3 from ppm)."""

from __future__ import annotations

import pytest

from core.models import Severity, ViolationStatus
from core.sanitation_settings import BinLidOpenSettings, ToiletOdourSettings
from processors.engine import Engine
from processors.rules.bin_lid_open import BinLidOpenRule
from processors.rules.toilet_odour import ToiletOdourRule, mgm3_from_ppm
from tests.support.events import reading
from tests.support.rules import run

LID = BinLidOpenSettings(open_after_s=900)


def lid(device, at_s, is_open):
    return reading(device, at_s, lid_open=is_open)


def other_traffic(until_s):
    """Another bin's readings: they move the watermark on, as a city's feed does."""
    return [reading("bin-other", s, fill_pct=10) for s in range(0, until_s, 60)]


def test_lid_open_for_the_limit_opens_when_event_time_passes_it_without_more_readings():
    first = lid("bin-1", 0, True)
    [opened] = run(BinLidOpenRule(LID), [first, *other_traffic(1000)])
    assert opened.type == "bin_lid_open" and opened.device_id == "bin-1"
    assert opened.start_time_ms == first.event_time_ms
    assert opened.updated_time_ms == first.event_time_ms + 900_000
    assert opened.evidence.event_ids == [first.event_id]


def test_lid_closed_just_before_the_limit_never_opens():
    events = [lid("bin-1", 0, True), lid("bin-1", 899, False), *other_traffic(2000)]
    assert run(BinLidOpenRule(LID), events) == []


def test_closing_clears_and_a_new_open_period_starts_afresh():
    events = [lid("bin-1", 0, True), lid("bin-1", 600, True), lid("bin-1", 1000, False),
              lid("bin-1", 1100, True), lid("bin-1", 1500, False), *other_traffic(3000)]
    opened, cleared = run(BinLidOpenRule(LID), events)
    assert cleared.violation_id == opened.violation_id and cleared.status is ViolationStatus.CLEARED
    assert set(opened.evidence.event_ids) == {events[0].event_id, events[1].event_id}


def test_the_deadline_is_judged_before_a_later_reading_of_the_same_bin():
    events = [lid("bin-1", 0, True), lid("bin-1", 950, True)]
    [opened] = run(BinLidOpenRule(LID), events)
    assert opened.updated_time_ms == events[0].event_time_ms + 900_000


def test_lid_limit_is_overridable_per_device():
    from core.settings import DeviceSettings
    from tests.support.rules import Registry

    registry = Registry(DeviceSettings(device_id="bin-1", kind="bin",
                                       thresholds={"bin_lid_open": {"open_after_s": 60}}))
    [opened] = run(BinLidOpenRule(LID, registry), [lid("bin-1", 0, True), *other_traffic(200)])
    assert opened.evidence.details["open_after_s"] == 60


def test_late_lid_reading_is_not_judged():
    engine = Engine([BinLidOpenRule(LID)], allowed_lateness_ms=0)
    engine.process([lid("bin-1", 10, False)], now_wall_ms=0)
    out = engine.process([lid("bin-1", 0, True), *other_traffic(2000)], now_wall_ms=0)
    assert out.violations == [] and len(out.late_events) == 1


def test_ppm_to_mgm3_at_25_c():
    # 1 ppm NH3 = 17.031 / 24.465 mg/m3; 1 ppm H2S = 34.08 / 24.465 mg/m3.
    assert mgm3_from_ppm(1, "nh3", 25) == pytest.approx(0.6961, abs=1e-4)
    assert mgm3_from_ppm(1, "h2s", 25) == pytest.approx(1.393, abs=1e-3)


def odour(at_s, **values):
    return reading("wc-1", at_s, kind="odour", **values)


def test_odour_above_the_limit_on_two_readings_opens_per_gas():
    settings = ToiletOdourSettings()
    events = [odour(0, nh3_mgm3=1.2, h2s_mgm3=0.02), odour(60, nh3_mgm3=1.1, h2s_mgm3=0.005),
              odour(120, nh3_mgm3=1.3, h2s_mgm3=0.005)]
    [opened] = run(ToiletOdourRule(settings), events)
    assert opened.type == "toilet_odour" and opened.evidence.details["attribute"] == "nh3_mgm3"
    assert opened.evidence.details["values"] == [1.2, 1.1]
    assert opened.severity is Severity.MEDIUM


def test_odour_at_exactly_the_limit_is_not_above_it():
    events = [odour(i * 60, nh3_mgm3=1.0, h2s_mgm3=0.01) for i in range(5)]
    assert run(ToiletOdourRule(ToiletOdourSettings()), events) == []


def test_one_spike_is_not_enough_and_ppm_readings_are_converted():
    # 2 ppm NH3 is about 1.39 mg/m3: above the class II limit of 1 mg/m3.
    spike = [odour(0, nh3_ppm=2.0), odour(60, nh3_ppm=0.5), odour(120, nh3_ppm=2.0)]
    assert run(ToiletOdourRule(ToiletOdourSettings()), spike) == []
    events = [odour(0, nh3_ppm=2.0), odour(60, nh3_ppm=2.0), odour(120, nh3_ppm=0.1)]
    opened, cleared = run(ToiletOdourRule(ToiletOdourSettings()), events)
    assert opened.evidence.details["ppm"] == 2.0 and opened.evidence.details["unit"] == "mg/m3"
    assert cleared.status is ViolationStatus.CLEARED
