"""Builders for traffic scenarios: one intersection, its camera and zones, and timelines of tracks and
signal changes, run through the real engine with the real rules."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from core.models import Event, Violation
from core.settings import RuleSettings
from core.traffic_settings import TrafficSettings
from processors.catalogue import build_traffic_rules
from processors.engine import Engine
from processors.traffic import TrafficContext
from tests.support.delivery import assert_same_regardless_of_delivery
from tests.support.events import T0_MS, reading

CAMERA = "cam-1"
INTERSECTION = "ix-1"
CITY = ZoneInfo("Asia/Shanghai")

TRAFFIC: dict[str, Any] = {
    "time_zone": "Asia/Shanghai",
    "track_idle_s": 600,
    "schedules": {
        "workday_peaks": {"days": ["mon", "tue", "wed", "thu", "fri"],
                          "windows": ["07:00-09:00", "17:00-19:00"]},
        "school_hours": {"days": ["mon", "tue", "wed", "thu", "fri"], "windows": ["07:30-08:30"]},
    },
    "intersections": [{"id": INTERSECTION, "approaches": [
        {"name": "north", "phase": "north_through"}, {"name": "east", "phase": "east_through"}]}],
    "cameras": [{"device_id": CAMERA, "intersection": INTERSECTION, "zones": [
        {"name": "stop_north", "type": "stop_line", "approach": "north"},
        {"name": "stop_north_lane2", "type": "stop_line", "approach": "north"},
        {"name": "stop_east", "type": "stop_line", "approach": "east"},
        {"name": "crosswalk_north", "type": "crosswalk", "pedestrian_phase": "ped_north"},
        {"name": "crosswalk_east", "type": "crosswalk", "pedestrian_phase": "ped_east"},
        {"name": "no_parking_peaks", "type": "no_parking", "schedule": "workday_peaks"},
        {"name": "sidewalk_west", "type": "sidewalk"},
        {"name": "one_way_north", "type": "one_way", "allowed_heading_deg": 0},
        {"name": "main_road", "type": "speed_limit", "speed_limit_kmh": 60,
         "scheduled_limits": [{"schedule": "school_hours", "speed_limit_kmh": 30}]},
        {"name": "slow_lane", "type": "speed_limit", "speed_limit_kmh": 40,
         "thresholds": {"speeding": {"tolerance_pct": 0}}},
    ]}],
}


def traffic_settings(**overrides: Any) -> TrafficSettings:
    return TrafficSettings.model_validate({**TRAFFIC, **overrides})


def rules(only: Sequence[str] | None = None, rule_settings: dict[str, Any] | None = None,
          traffic: TrafficSettings | None = None, devices: Any = None) -> list[Any]:
    settings = RuleSettings.model_validate(rule_settings or {})
    context = TrafficContext.build(traffic or traffic_settings(), devices, settings.zone_thresholds,
                                   settings.kind_thresholds)
    built = build_traffic_rules(settings, context)
    return [rule for rule in built if only is None or rule.name in only]


def run(events: Sequence[Event], only: Sequence[str] | None = None, lateness_ms: int = 2000,
        **kwargs: Any) -> list[Violation]:
    """Everything through one engine, in one batch, then drained: the violations in emission order."""
    engine = Engine(rules(only, **kwargs), allowed_lateness_ms=lateness_ms)
    out = engine.process(events, now_wall_ms=0)
    out.extend(engine.drain())
    return out.violations


def track(at_s: float, track_id: str, label: str = "car", zones: Sequence[str] = (), *,
          stage: str = "update", device: str = CAMERA, **attributes: Any) -> Event:
    return reading(device, at_s, kind="track", track_id=track_id, stage=stage, label=label,
                   zones=list(zones), **attributes)


def signal(at_s: float, phase: str, state: str, intersection: str = INTERSECTION) -> Event:
    return reading("sig-1", at_s, kind="signal", intersection=intersection, phase=phase, state=state)


def local_s(text: str) -> float:
    """Seconds from T0 of a local city time such as '2025-11-26T07:00' (a Wednesday)."""
    moment = datetime.fromisoformat(text).replace(tzinfo=CITY)
    return (moment.timestamp() * 1000 - T0_MS) / 1000


def same_regardless_of_delivery(events: Sequence[Event], only: Sequence[str] | None = None,
                                seeds: int = 15, **kwargs: Any) -> list[Violation]:
    """The in-order result, after checking shuffled and duplicated deliveries, fed a few events at a time
    with the wall clock following arrival like a live feed, give exactly the same with no late event, and
    that without the reorder buffer they would not (tests/support/delivery.py)."""
    engine = Engine(rules(only, **kwargs), allowed_lateness_ms=2000)
    expected = engine.process(events, now_wall_ms=0)
    expected.extend(engine.drain())
    assert_same_regardless_of_delivery(lambda: rules(only, **kwargs), events, expected, seeds)
    return expected.violations
