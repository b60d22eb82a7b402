"""Which rule settings may be overridden per device, per zone and per kind, and checking overrides at load.

An override is `{rule: {setting: value}}` (in a device's `thresholds`, a camera zone's `thresholds`, and
per zone tag and per kind under `rules.zone_thresholds` and `rules.kind_thresholds`). The rule is named
by its violation type (`sensor_stuck`) or by its settings section (`stuck_sensor`); both mean the same
rule and are stored under the violation type, the name rules look overrides up by. The settings that
may be overridden are the rule's numeric judgement settings, with the same ranges as in its section:
what is not a threshold (how long state is kept, how often a clock is checked, how much state a rule
keeps) is set once for the rule.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

import annotated_types
from pydantic import BaseModel

from core import sanitation_settings as san
from core import traffic_settings as traffic

# Settings that are not thresholds: kept for the rule as a whole.
_NOT_THRESHOLDS = frozenset({"state_ttl_s", "check_every_s", "max_tick_gap_s", "max_points"})

# (settings section name, violation type, settings class): every rule with numeric settings.
_SECTIONS: tuple[tuple[str, str, type[BaseModel]], ...] = (
    ("bin_overflow", "bin_overflow", san.BinOverflowSettings),
    ("bin_near_full", "bin_near_full", san.BinNearFullSettings),
    ("bin_fire", "bin_fire", san.BinFireSettings),
    ("bin_tilt", "bin_tilt", san.BinTiltSettings),
    ("bin_lid_open", "bin_lid_open", san.BinLidOpenSettings),
    ("toilet_odour", "toilet_odour", san.ToiletOdourSettings),
    ("air_quality", "air_quality_exceedance", san.AirQualitySettings),
    ("construction_dust", "construction_dust", san.ConstructionDustSettings),
    ("water_black_odour", "water_black_odour", san.WaterBlackOdourSettings),
    ("device_offline", "device_offline", san.DeviceOfflineSettings),
    ("low_battery", "low_battery", san.LowBatterySettings),
    ("stuck_sensor", "sensor_stuck", san.StuckSensorSettings),
    ("implausible_reading", "sensor_implausible", san.ImplausibleReadingSettings),
    ("red_light", "red_light", traffic.RedLightSettings),
    ("pedestrian_red", "pedestrian_red", traffic.PedestrianRedSettings),
    ("yield_crosswalk", "yield_crosswalk", traffic.YieldCrosswalkSettings),
    ("illegal_parking", "illegal_parking", traffic.IllegalParkingSettings),
    ("wrong_way", "wrong_way", traffic.WrongWaySettings),
    ("speeding", "speeding", traffic.SpeedingSettings),
    ("no_helmet", "no_helmet", traffic.NoHelmetSettings),
    ("congestion", "congestion", traffic.CongestionSettings),
    ("camera_violation", "camera_violation", traffic.CameraViolationSettings),
)

# Settings of a rule that live outside its section: the air-quality limits of the standard in force.
_EXTRA: dict[str, tuple[type[BaseModel], ...]] = {"air_quality_exceedance": (san.AirLimits,)}

RULE_NAMES: dict[str, str] = {section: rule for section, rule, _ in _SECTIONS}


@dataclass(frozen=True)
class Setting:
    """One overridable setting: whether it is a whole number, and its bounds (None: unbounded)."""

    integer: bool
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def problem(self, value: float) -> str | None:
        if self.integer and value != int(value):
            return f"must be a whole number, got {value!r}"
        for bound, words, fails in ((self.gt, "greater than", lambda b: value <= b),
                                    (self.ge, "at least", lambda b: value < b),
                                    (self.lt, "less than", lambda b: value >= b),
                                    (self.le, "at most", lambda b: value > b)):
            if bound is not None and fails(bound):
                return f"must be {words} {bound:g}, got {value:g}"
        return None


def _settings_of(model: type[BaseModel]) -> dict[str, Setting]:
    found = {}
    for name, field in model.model_fields.items():
        if name in _NOT_THRESHOLDS or field.annotation not in (int, float):
            continue
        bounds: dict[str, float] = {}
        for item in field.metadata:
            for kind in ("gt", "ge", "lt", "le"):
                if isinstance(item, getattr(annotated_types, kind.capitalize())):
                    bounds[kind] = float(getattr(item, kind))
        found[name] = Setting(integer=field.annotation is int, **bounds)
    return found


@cache
def overridable() -> dict[str, dict[str, Setting]]:
    """Violation type -> its overridable settings."""
    table = {}
    for _, rule, model in _SECTIONS:
        settings = _settings_of(model)
        for extra in _EXTRA.get(rule, ()):
            settings.update(_settings_of(extra))
        table[rule] = settings
    return table


def rule_name(name: str) -> str:
    """The violation type of a rule given by either of its names; ValueError for an unknown rule."""
    rules = overridable()
    if name in rules:
        return name
    if name in RULE_NAMES:
        return RULE_NAMES[name]
    close = difflib.get_close_matches(name, [*rules, *RULE_NAMES], n=1)
    raise ValueError(f"unknown rule {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))


def check_overrides(overrides: Mapping[str, Mapping[str, float]], where: str = "",
                    ) -> dict[str, dict[str, float]]:
    """`{rule: {setting: value}}` with every rule under its violation type; ValueError naming the path
    (`where` prefixes it) of the first unknown rule, unknown setting or value out of its range."""
    checked: dict[str, dict[str, float]] = {}
    rules = overridable()
    for given, values in overrides.items():
        try:
            rule = rule_name(given)
        except ValueError as exc:
            raise ValueError(f"{where}{given}: {exc}") from None
        if rule in checked:
            raise ValueError(f"{where}{given}: rule {rule!r} is given twice (under both of its names)")
        known = rules[rule]
        for name, value in values.items():
            setting = known.get(name)
            if setting is None:
                close = difflib.get_close_matches(name, list(known), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"{where}{given}.{name}: {rule} has no setting {name!r} that can be "
                                 f"overridden ({hint}overridable: {', '.join(sorted(known)) or 'none'})")
            problem = setting.problem(value)
            if problem is not None:
                raise ValueError(f"{where}{given}.{name}: {problem}")
        checked[rule] = dict(values)
    return checked


def check_grouped(grouped: Mapping[str, Mapping[str, Mapping[str, float]]],
                  ) -> dict[str, dict[str, dict[str, float]]]:
    """`{group: {rule: {setting: value}}}` (a zone tag or a kind per group), checked like check_overrides."""
    return {group: check_overrides(overrides, f"{group}.") for group, overrides in grouped.items()}


def check_rule_names(names: list[str], where: str) -> list[str]:
    """Rule names (either name of each rule), as violation types; ValueError naming an unknown one."""
    checked = []
    for name in names:
        try:
            checked.append(rule_name(name))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return checked

