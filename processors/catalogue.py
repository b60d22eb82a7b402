"""Builds the enabled rules from settings: the one place that knows every rule."""

from __future__ import annotations

from typing import Any

from core.models import Event
from core.settings import DeviceSettings, RuleSettings
from core.traffic_settings import TrafficSettings
from processors.devices import DeviceLookup, Thresholds
from processors.rule import Rule
from processors.rules.air_quality import AirQualityRule
from processors.rules.bin_fire import BinFireRule
from processors.rules.bin_lid_open import BinLidOpenRule
from processors.rules.bin_near_full import BinNearFullRule
from processors.rules.bin_overflow import BinOverflowRule
from processors.rules.bin_tilt import BinTiltRule
from processors.rules.camera_violation import CameraViolationRule
from processors.rules.congestion import CongestionRule
from processors.rules.construction_dust import ConstructionDustRule
from processors.rules.device_offline import DeviceOfflineRule
from processors.rules.illegal_parking import IllegalParkingRule
from processors.rules.implausible_reading import ImplausibleReadingRule
from processors.rules.low_battery import LowBatteryRule
from processors.rules.no_helmet import NoHelmetRule
from processors.rules.pedestrian_red import PedestrianRedRule
from processors.rules.red_light import RedLightRule
from processors.rules.speeding import SpeedingRule
from processors.rules.stuck_sensor import StuckSensorRule
from processors.rules.toilet_odour import ToiletOdourRule
from processors.rules.water_black_odour import WaterBlackOdourRule
from processors.rules.wrong_way import WrongWayRule
from processors.rules.yield_crosswalk import YieldCrosswalkRule
from processors.traffic import TrafficContext

# Every rule class by its section under `rules`, for what is known of the rules without building them
# (which kinds and attributes they judge, which settings they have).
RULE_SECTIONS: dict[str, type[Rule[Any]]] = {
    "bin_overflow": BinOverflowRule, "implausible_reading": ImplausibleReadingRule,
    "stuck_sensor": StuckSensorRule, "device_offline": DeviceOfflineRule, "bin_near_full": BinNearFullRule,
    "bin_fire": BinFireRule, "bin_tilt": BinTiltRule, "bin_lid_open": BinLidOpenRule,
    "toilet_odour": ToiletOdourRule, "air_quality": AirQualityRule, "construction_dust": ConstructionDustRule,
    "water_black_odour": WaterBlackOdourRule, "low_battery": LowBatteryRule, "red_light": RedLightRule,
    "pedestrian_red": PedestrianRedRule, "yield_crosswalk": YieldCrosswalkRule,
    "illegal_parking": IllegalParkingRule, "wrong_way": WrongWayRule, "speeding": SpeedingRule,
    "no_helmet": NoHelmetRule, "congestion": CongestionRule, "camera_violation": CameraViolationRule,
}


def build_rules(settings: RuleSettings, devices: DeviceLookup,
                registered: list[DeviceSettings] | None = None,
                traffic: TrafficSettings | None = None) -> list[Rule[Any]]:
    """`registered`: the registry's devices, for rules that judge devices that send nothing;
    `traffic`: intersections, camera zones and the code table of the traffic rules."""
    rules: list[Rule[Any]] = []
    # Every rule reads its numbers through one resolver (processors.devices.Thresholds): device, zone tag,
    # kind, then the rule's own default.
    zones, kinds = settings.zone_thresholds, settings.kind_thresholds
    if settings.bin_overflow.enabled:
        rules.append(BinOverflowRule(settings.bin_overflow, devices, zones, kinds=kinds))
    # Sanitation and environment (docs/rules-sanitation.md).
    if settings.implausible_reading.enabled:
        rules.append(ImplausibleReadingRule(settings.implausible_reading, devices, zones, kinds=kinds))
    if settings.stuck_sensor.enabled:
        rules.append(StuckSensorRule(settings.stuck_sensor, devices, zones, kinds=kinds))
    if settings.device_offline.enabled:
        rules.append(DeviceOfflineRule(settings.device_offline, registered or [],
                                       Thresholds(devices, zones, kinds)))
    if settings.bin_near_full.enabled:
        rules.append(BinNearFullRule(settings.bin_near_full, devices, zones, kinds=kinds))
    if settings.bin_fire.enabled:
        rules.append(BinFireRule(settings.bin_fire, devices, zones, kinds=kinds))
    if settings.bin_tilt.enabled:
        rules.append(BinTiltRule(settings.bin_tilt, devices, zones, kinds=kinds))
    if settings.bin_lid_open.enabled:
        rules.append(BinLidOpenRule(settings.bin_lid_open, devices, zones, kinds=kinds))
    if settings.toilet_odour.enabled:
        rules.append(ToiletOdourRule(settings.toilet_odour, devices, zones, kinds=kinds))
    if settings.air_quality.enabled:
        rules.append(AirQualityRule(settings.air_quality, devices, zones, kinds=kinds))
    if settings.construction_dust.enabled:
        rules.append(ConstructionDustRule(settings.construction_dust, devices, zones, kinds=kinds))
    if settings.water_black_odour.enabled:
        rules.append(WaterBlackOdourRule(settings.water_black_odour, devices, zones, kinds=kinds))
    if settings.low_battery.enabled:
        rules.append(LowBatteryRule(settings.low_battery, devices, zones, kinds=kinds))
    # Traffic (docs/rules.md).
    context = TrafficContext.build(traffic or TrafficSettings(), devices, zones, kinds)
    rules.extend(build_traffic_rules(settings, context))
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


def partition_key(event: Event) -> str:
    """The bus key that brings together every event one rule instance needs (one partition, one state).

    Rules that join signals, detectors and cameras key their state by intersection; the others by device.
    A device's intersection comes from its registry tags or its own attributes, and is the same for all
    its events, so a device always maps to one partition whichever rules are enabled.
    """
    intersection = event.tags.get("intersection") or event.attributes.get("intersection")
    return str(intersection) if intersection else event.device_id


def device_partition_key(device: DeviceSettings) -> str:
    """The partition key of a registered device's events, as far as the registry tells it (its tags);
    for rules that judge registered devices that send nothing, on the partition that hears them."""
    return device.tags.get("intersection") or device.device_id
