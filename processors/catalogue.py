"""Builds the enabled rules from settings: the one place that knows every rule."""

from __future__ import annotations

from typing import Any

from citywatch.settings import RuleSettings
from citywatch.traffic_settings import TrafficSettings
from processors.devices import DeviceLookup
from processors.rule import Rule
from processors.rules.bin_overflow import BinOverflowRule
from processors.rules.camera_violation import CameraViolationRule
from processors.rules.congestion import CongestionRule
from processors.rules.illegal_parking import IllegalParkingRule
from processors.rules.no_helmet import NoHelmetRule
from processors.rules.pedestrian_red import PedestrianRedRule
from processors.rules.red_light import RedLightRule
from processors.rules.speeding import SpeedingRule
from processors.rules.wrong_way import WrongWayRule
from processors.rules.yield_crosswalk import YieldCrosswalkRule
from processors.traffic import TrafficContext


def build_rules(settings: RuleSettings, devices: DeviceLookup,
                traffic: TrafficSettings | None = None) -> list[Rule[Any]]:
    rules: list[Rule[Any]] = []
    if settings.bin_overflow.enabled:
        rules.append(BinOverflowRule(settings.bin_overflow, devices))
    rules.extend(build_traffic_rules(settings, TrafficContext.build(traffic or TrafficSettings(), devices)))
    return rules


def build_traffic_rules(settings: RuleSettings, context: TrafficContext) -> list[Rule[Any]]:
    candidates: list[tuple[bool, Rule[Any]]] = [
        (settings.red_light.enabled, RedLightRule(settings.red_light, context)),
        (settings.pedestrian_red.enabled, PedestrianRedRule(settings.pedestrian_red, context)),
        (settings.yield_crosswalk.enabled, YieldCrosswalkRule(settings.yield_crosswalk, context)),
        (settings.illegal_parking.enabled, IllegalParkingRule(settings.illegal_parking, context)),
        (settings.wrong_way.enabled, WrongWayRule(settings.wrong_way, context)),
        (settings.speeding.enabled, SpeedingRule(settings.speeding, context)),
        (settings.no_helmet.enabled, NoHelmetRule(settings.no_helmet, context)),
        (settings.congestion.enabled, CongestionRule(settings.congestion, context)),
        (settings.camera_violation.enabled, CameraViolationRule(settings.camera_violation, context)),
    ]
    return [rule for enabled, rule in candidates if enabled]
