"""Every sanitation rule's state survives the engine's snapshot and restore (a clean stop and start),
and stays bounded per device however long a device reports."""

from __future__ import annotations

from core.sanitation_settings import BinNearFullSettings
from core.settings import load_settings
from ingest.registry import DeviceRegistry
from processors.catalogue import build_rules
from processors.engine import Engine
from processors.rules.bin_near_full import BinNearFullRule
from tests.support.events import reading
from tests.support.sanitation_scenarios import SCENARIOS


def engine_with_every_rule() -> Engine:
    settings = load_settings()
    rules = build_rules(settings.rules, DeviceRegistry(settings.devices), settings.devices)
    return Engine(rules, allowed_lateness_ms=0)


def test_snapshot_and_restore_keep_every_rules_state():
    events = [event for _, scenario in SCENARIOS.values() for event in scenario]
    events.append(reading("bin-0201", 0, distance_mm=500))  # registered with an expected interval
    first = engine_with_every_rule()
    first.process(events, now_wall_ms=0)
    first.process([], now_wall_ms=10_000)  # tick the clock rules too
    first.drain()
    snapshot = first.snapshot()
    restarted = engine_with_every_rule()
    restarted.restore(snapshot)
    assert restarted.snapshot() == snapshot
    used = {name for name, state in first.states.items() if len(state)}
    assert {"bin_fire", "air_quality_exceedance", "water_black_odour", "bin_lid_open", "sensor_stuck",
            "device_offline", "bin_near_full", "toilet_odour"} <= used


def test_forecast_state_is_bounded_per_bin():
    engine = Engine([BinNearFullRule(BinNearFullSettings(max_points=48))], allowed_lateness_ms=0)
    events = [reading("bin-1", i * 10, fill_pct=min(99, i * 0.05)) for i in range(2000)]
    engine.process(events, now_wall_ms=0)
    assert len(engine.states["bin_near_full"].get("bin-1").points) == 48
