"""Device health: offline on a watched clock, stuck and implausible readings gated from other rules."""

from __future__ import annotations

from core.models import ViolationStatus
from core.sanitation_settings import (
    DeviceOfflineSettings,
    ImplausibleReadingSettings,
    StuckSensorSettings,
)
from core.settings import BinOverflowSettings, DeviceSettings
from processors.engine import Engine
from processors.rules.bin_overflow import BinOverflowRule
from processors.rules.device_offline import DeviceOfflineRule
from processors.rules.implausible_reading import ImplausibleReadingRule
from processors.rules.stuck_sensor import StuckSensorRule
from tests.support.events import T0_MS, reading
from tests.support.rules import Registry, run, run_all

DEVICES = [DeviceSettings(device_id="bin-1", kind="bin", expected_interval_s=60, lat=22.5, lon=114.0,
                          tags={"district": "futian"}),
           DeviceSettings(device_id="bin-quiet", kind="bin")]  # no expected interval: never judged
SETTINGS = DeviceOfflineSettings(check_every_s=1)


def engine():
    return Engine([DeviceOfflineRule(SETTINGS, DEVICES)], allowed_lateness_ms=0)


def tick_every_second(engine, start_ms, seconds, live=True):
    out = []
    for second in range(seconds + 1):
        out += engine.process([], now_wall_ms=start_ms + second * 1000, input_live=live).violations
    return out


def test_silent_for_three_intervals_is_offline_and_the_next_message_clears():
    eng = engine()
    eng.process([reading("bin-1", 0, fill_pct=10)], now_wall_ms=T0_MS)
    assert tick_every_second(eng, T0_MS, 179) == []
    [offline] = tick_every_second(eng, T0_MS + 180_000, 5)
    assert offline.type == "device_offline" and offline.device_id == "bin-1"
    assert offline.evidence.details["silent_s"] == 180 and offline.tags == {"district": "futian"}
    assert tick_every_second(eng, T0_MS + 186_000, 100) == []  # opened once
    [back] = eng.process([reading("bin-1", 400, fill_pct=12)], now_wall_ms=T0_MS + 400_000).violations
    assert back.violation_id == offline.violation_id and back.status is ViolationStatus.CLEARED


def test_a_registered_device_never_heard_from_goes_offline_after_the_grace_period():
    eng = engine()
    [offline] = tick_every_second(eng, T0_MS, 185)
    assert offline.device_id == "bin-1" and offline.evidence.event_ids == []


def test_time_while_ingest_is_disconnected_does_not_count():
    eng = engine()
    eng.process([reading("bin-1", 0, fill_pct=10)], now_wall_ms=T0_MS)
    assert tick_every_second(eng, T0_MS, 100) == []
    assert tick_every_second(eng, T0_MS + 101_000, 600, live=False) == []  # MQTT down for 10 minutes
    assert tick_every_second(eng, T0_MS + 702_000, 78) == []  # 100 s + 79 s watched: still online
    assert len(tick_every_second(eng, T0_MS + 781_000, 3)) == 1


def test_a_long_gap_between_ticks_counts_only_max_tick_gap():
    eng = engine()
    eng.process([reading("bin-1", 0, fill_pct=10)], now_wall_ms=T0_MS)
    eng.process([], now_wall_ms=T0_MS)
    # citywatch stalled (or the host slept) for an hour: only 30 s of it is counted.
    assert eng.process([], now_wall_ms=T0_MS + 3_600_000).violations == []


def test_after_a_restart_devices_get_a_fresh_grace_period_and_open_incidents_still_clear():
    eng = engine()
    eng.process([reading("bin-1", 0, fill_pct=10)], now_wall_ms=T0_MS)
    [offline] = tick_every_second(eng, T0_MS, 200)
    snapshot = eng.drain() and eng.snapshot()
    restarted = engine()
    restarted.restore(snapshot)
    assert tick_every_second(restarted, T0_MS + 7_200_000, 170) == []  # fresh grace, incident stays open
    [back] = restarted.process([reading("bin-1", 7400, fill_pct=12)],
                               now_wall_ms=T0_MS + 7_400_000).violations
    assert back.violation_id == offline.violation_id and back.status is ViolationStatus.CLEARED


def distances(*values, device="bin-1", step_s=600):
    return [reading(device, i * step_s, distance_mm=v) for i, v in enumerate(values)]


DEPTH = Registry(DeviceSettings(device_id="bin-1", kind="bin", install={"bin_depth_mm": 1000}))


def test_stuck_distance_is_flagged_and_its_readings_do_not_feed_the_overflow():
    rules = [BinOverflowRule(BinOverflowSettings(), DEPTH), StuckSensorRule(StuckSensorSettings(readings=3))]
    events = distances(500, 50, 50, 50, 50, 50)  # 95% full, then frozen
    out = run_all(rules, events)
    overflow, stuck = sorted(out.violations, key=lambda v: v.type)
    assert stuck.type == "sensor_stuck" and stuck.evidence.event_ids == [e.event_id for e in events[1:4]]
    assert overflow.type == "bin_overflow"  # readings 2 and 3 still counted: not yet known to be stuck
    assert [e.event_id for e in out.suspect_events] == [e.event_id for e in events[3:]]


def test_stuck_sensor_border_and_clearing():
    rule = StuckSensorRule(StuckSensorSettings(readings=4))
    assert run(rule, distances(300, 300, 300, 301, 301, 301)) == []
    events = distances(300, 300, 300, 300, 310)
    opened, cleared = run(StuckSensorRule(StuckSensorSettings(readings=4)), events)
    assert opened.status is ViolationStatus.OPEN and cleared.end_time_ms == events[4].event_time_ms


def test_attributes_that_may_repeat_are_not_watched():
    events = [reading("bin-1", i * 60, fill_pct=100) for i in range(30)]
    assert run(StuckSensorRule(StuckSensorSettings()), events) == []


def test_implausible_readings_are_flagged_and_gated_then_cleared():
    rules = [BinOverflowRule(BinOverflowSettings(), DEPTH),
             ImplausibleReadingRule(ImplausibleReadingSettings(), DEPTH)]
    events = distances(50, 1200, 60)  # 95%, beyond the bottom (1000 + 100 tolerance), 94%
    out = run_all(rules, events)
    types = [(v.type, v.status) for v in out.violations]
    assert types == [("sensor_implausible", ViolationStatus.OPEN),
                     ("sensor_implausible", ViolationStatus.CLEARED), ("bin_overflow", ViolationStatus.OPEN)]
    assert out.suspect_events == [events[1]]
    assert out.violations[0].evidence.details["problems"] == ["distance_mm 1200 beyond the bin depth 1000"]


def test_implausible_air_and_water_values():
    rule = ImplausibleReadingRule(ImplausibleReadingSettings())
    events = [reading("air-1", 0, kind="air", pm25_ugm3=80, pm10_ugm3=60),
              reading("probe-1", 0, kind="water", do_mgl=40.0),
              reading("air-2", 0, kind="air", pm25_ugm3=65, pm10_ugm3=60)]  # within the 10 ug/m3 tolerance
    out = run_all([rule], events)
    assert sorted(v.device_id for v in out.violations) == ["air-1", "probe-1"]


def test_offline_rule_still_sees_suspect_readings():
    rules = [DeviceOfflineRule(SETTINGS, DEVICES), StuckSensorRule(StuckSensorSettings(readings=2))]
    eng = Engine(rules, allowed_lateness_ms=0)
    eng.process(distances(50, 50, 50), now_wall_ms=T0_MS)
    assert tick_every_second(eng, T0_MS, 170) == []
    eng.process([reading("bin-1", 1900, distance_mm=50)], now_wall_ms=T0_MS + 171_000)
    assert tick_every_second(eng, T0_MS + 172_000, 170) == []  # the stuck reading proved it alive
