"""Configurations that load but silently drop or hide data, found from the loaded settings alone.

Validation at load (core/settings.py) refuses what cannot be used; this module finds what can be used
but does not do what its author meant: a route that an earlier route shadows, a device whose model
names no vendor map, a mapped attribute no rule reads, a threshold override naming a rule or setting
that does not exist, a path still taken from the working directory. Each finding names the field,
says what happens to the data and how to fix it. `citywatch check-config` prints them and each role
logs them at start-up. It reads the ingest settings and the rules' declarations (which kinds and
attributes each rule judges), so it lives with the other code that composes the parts.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from api.violation_types import known_violation_types
from core.case_settings import CaseRouteMatch
from core.ingest_config import VendorMap
from core.settings import DeviceSettings, RuleSettings, Settings
from ingest.attributes import NUMERIC_UNIT_SUFFIXES
from ingest.normalizer import TopicFilter
from ingest.vendor_maps import vendor_map_named
from processors.catalogue import RULE_SECTIONS
from processors.rule import ANY_KIND, Rule
from processors.rules.stuck_sensor import StuckSensorRule

log = logging.getLogger("citywatch.config")

# The codecs that pick a vendor map by the registered device's model (ingest/codecs/lorawan.py).
VENDOR_MAP_CODECS = frozenset({"tts", "chirpstack"})


class Severity(StrEnum):
    ERROR = "error"  # data certainly does not go where the configuration means it to
    WARNING = "warning"  # data very likely does not: only a mistake explains the configuration
    NOTE = "note"  # data is kept but nothing judges it; fine when it is only for the record


@dataclass(frozen=True)
class Finding:
    severity: Severity
    field: str  # the configuration field, e.g. `ingest.routes[2].pattern`
    problem: str  # what happens to the data
    fix: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.field}: {self.problem}. Fix: {self.fix}"


def find(settings: Settings) -> list[Finding]:
    """Every finding, errors first, in the order of the configuration within a severity."""
    found = [
        *_shadowed_routes(settings),
        *_lorawan_device_ids(settings),
        *_legacy_paths(settings),
        *_device_kinds(settings),
        *_device_models(settings),
        *_vendor_map_attributes(settings),
        *_bin_depths(settings),
        *_device_thresholds(settings),
        *_zone_thresholds(settings),
        *_kind_thresholds(settings),
        *_stuck_sensor_kinds(settings),
        *_case_routes(settings),
        *_cors_any_origin(settings),
    ]
    order = list(Severity)
    return sorted(found, key=lambda finding: order.index(finding.severity))


def _case_routes(settings: Settings) -> Iterator[Finding]:
    """A case route naming a violation type nothing makes, or one an earlier route always takes first."""
    known = known_violation_types(settings.traffic.codes)
    routes = settings.cases.routes
    for index, route in enumerate(routes):
        for position, name in enumerate(route.match.types):
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                yield Finding(Severity.ERROR, f"cases.routes[{index}].match.types[{position}]",
                              f"no rule makes violations of type {name!r}: the route never opens a case "
                              "for it",
                              f"name a violation type{f' ({close[0]!r}?)' if close else ''} (docs/rules.md)")
        earlier = next((i for i in range(index) if _match_covers(routes[i].match, route.match)), None)
        if earlier is not None:
            yield Finding(Severity.ERROR, f"cases.routes[{index}].match",
                          f"never takes a violation: routes[{earlier}] matches every violation it matches "
                          f"and the first matching route takes it ({routes[earlier].department})",
                          f"move routes[{index}] above routes[{earlier}], or narrow routes[{earlier}].match")


def _cors_any_origin(settings: Settings) -> Iterator[Finding]:
    """`api.cors_origins: ["*"]`: every web page may call the API from its visitors' browsers."""
    if "*" in settings.api.cors_origins:
        yield Finding(Severity.WARNING, "api.cors_origins",
                      "\"*\" lets a page on any web site call the API: an API key works from every page "
                      "that has it (pasted by a user, or in a page's script), and nothing ties it to your "
                      "own console",
                      "list the origins of your own pages instead, e.g. [\"https://console.city.example\"] "
                      "(docs/security.md, Browsers and CORS)")


def _match_covers(general: CaseRouteMatch, specific: CaseRouteMatch) -> bool:
    """Whether every violation `specific` matches is matched by `general` (time windows: only when the
    general route has none, or the same ones)."""
    def covers(wide: list[str], narrow: list[str]) -> bool:
        return not wide or (bool(narrow) and set(narrow) <= set(wide))

    return (covers(general.types, specific.types) and covers(general.grids, specific.grids)
            and covers(general.districts, specific.districts)
            and covers(general.departments, specific.departments)
            and (not general.hours or sorted(general.hours) == sorted(specific.hours)))


def log_findings(settings: Settings, role: str) -> list[Finding]:
    """Log every finding at start-up (notes at INFO, so a default log shows only what needs a fix)."""
    findings = find(settings)
    levels = {Severity.ERROR: logging.ERROR, Severity.WARNING: logging.WARNING, Severity.NOTE: logging.INFO}
    for finding in findings:
        log.log(levels[finding.severity], "configuration (%s): %s", role, finding)
    return findings


# --- routes -------------------------------------------------------------------------------------


def filter_covers(general: str, specific: str) -> bool:
    """Whether every topic the MQTT filter `specific` matches is also matched by `general`."""
    general_levels, specific_levels = general.split("/"), specific.split("/")
    for index, level in enumerate(general_levels):
        if level == "#":
            return True  # `a/#` also matches `a` itself
        if index >= len(specific_levels) or specific_levels[index] == "#":
            return False
        if level != "+" and level != specific_levels[index]:
            return False  # a literal level covers only itself (not a `+`)
    return len(general_levels) == len(specific_levels)


def _valid_filter(pattern: str) -> str | None:
    """Why `pattern` is not an MQTT topic filter (ingest refuses it when it starts), or None."""
    try:
        TopicFilter(pattern)
    except ValueError as exc:
        return str(exc)
    return None


def _shadowed_routes(settings: Settings) -> Iterator[Finding]:
    routes = settings.ingest.routes
    valid = [_valid_filter(route.pattern) is None for route in routes]
    for index, route in enumerate(routes):
        problem = _valid_filter(route.pattern)
        if problem is not None:
            yield Finding(Severity.ERROR, f"ingest.routes[{index}].pattern",
                          f"{problem}: ingest cannot subscribe to it and does not start",
                          "write a filter whose + and # fill whole levels, # only last")
            continue
        earlier = next((i for i in range(index)
                        if valid[i] and filter_covers(routes[i].pattern, route.pattern)), None)
        if earlier is None:
            continue
        first = routes[earlier]
        yield Finding(
            Severity.ERROR, f"ingest.routes[{index}].pattern",
            f"{route.pattern!r} ({route.codec}) never decodes a message: routes[{earlier}] "
            f"{first.pattern!r} ({first.codec}) matches every topic it matches and the first matching "
            f"route decodes",
            f"move routes[{index}] above routes[{earlier}], or narrow routes[{earlier}].pattern",
        )


_DEV_EUI = re.compile(r"[0-9A-F]{16}")  # as the LoRaWAN codecs write it (ingest/codecs/lorawan.py)


def _lorawan_device_ids(settings: Settings) -> Iterator[Finding]:
    """A route that registers devices by DevEUI, while every device with a vendor map has another id."""
    mapped = [device.device_id for device in settings.devices
              if device.active and vendor_map_for(device.model, settings.vendor_maps) is not None]
    for index, route in enumerate(settings.ingest.routes):
        if route.codec not in VENDOR_MAP_CODECS or route.lorawan_device_id != "eui" or not mapped:
            continue
        prefix = route.device_id_prefix
        if any(device_id.startswith(prefix) and _DEV_EUI.fullmatch(device_id[len(prefix):])
               for device_id in mapped):
            continue
        yield Finding(
            Severity.WARNING, f"ingest.routes[{index}].lorawan_device_id",
            f"eui: this route's uplinks come from devices {prefix!r} + 16 upper-case hex digits, but no "
            f"device with a vendor map has such an id (e.g. {mapped[0]!r}), so their uplinks are "
            "dead-lettered as unknown_device (or, with accept_unknown_devices, decoded without their map)",
            "set lorawan_device_id: name, or register the devices by their DevEUI",
        )


# --- paths --------------------------------------------------------------------------------------


def _legacy_paths(settings: Settings) -> Iterator[Finding]:
    for legacy in settings.legacy_paths:
        yield Finding(
            Severity.WARNING, legacy.field,
            f"{str(legacy.written)!r} is relative, and relative paths are taken from the configuration "
            f"file's folder ({legacy.expected}); it is found only in the working directory, so "
            f"{legacy.used} is used, and starting from another folder would use another one",
            f"move {legacy.used} to {legacy.expected}, or write the absolute path {legacy.used}",
        )


# --- devices and the rules ------------------------------------------------------------------------


def enabled_rules(rules: RuleSettings) -> list[type[Rule[Any]]]:
    return [rule for section, rule in RULE_SECTIONS.items() if getattr(rules, section).enabled]


def attributes_read(rules: Iterable[type[Rule[Any]]], kind: str) -> frozenset[str]:
    """The attributes of events of `kind` that the given rules judge."""
    read: set[str] = set()
    for rule in rules:
        if kind in rule.kinds or ANY_KIND in rule.kinds:
            read |= rule.reads_attributes
    return frozenset(read)


def _judged_kinds(rules: Iterable[type[Rule[Any]]]) -> set[str]:
    """Kinds whose readings some rule judges (not only the rules that judge any device's silence or
    battery, nor the sensor-fault inspectors)."""
    return {kind for rule in rules if rule.reads_attributes and ANY_KIND not in rule.kinds
            for kind in rule.kinds}


def _device_field(device: DeviceSettings, name: str) -> str:
    return f"devices[id={device.device_id}].{name}"


def _close(name: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(name, sorted(candidates), n=1)
    return matches[0] if matches else None


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = _close(name, candidates)
    return f" (did you mean {close!r}?)" if close else ""


def _device_kinds(settings: Settings) -> Iterator[Finding]:
    judged = _judged_kinds(enabled_rules(settings.rules))
    for device in settings.devices:
        if not device.active or device.kind in judged:
            continue
        yield Finding(
            Severity.WARNING, _device_field(device, "kind"),
            f"no enabled rule judges readings of kind {device.kind!r}{_did_you_mean(device.kind, judged)}; "
            "its events are stored but never judged (only rules for every kind, such as device_offline and "
            "low_battery, see them)",
            f"use a kind the rules judge ({', '.join(sorted(judged))}) or enable the rule for this kind",
        )


def vendor_map_for(model: str | None, vendor_maps: Mapping[str, VendorMap]) -> str | None:
    """The name of the vendor map a model selects, found as ingest finds it at run time."""
    named = vendor_map_named(model, vendor_maps)
    return None if named is None else named[0]


def _lorawan_routes(settings: Settings) -> list[str]:
    return [route.pattern for route in settings.ingest.routes if route.codec in VENDOR_MAP_CODECS]


def _device_models(settings: Settings) -> Iterator[Finding]:
    maps = settings.vendor_maps
    if not maps or not _lorawan_routes(settings):
        return  # no codec picks a map: a model is only a description
    # Kinds whose devices use vendor maps: a device of such a kind without a map is most likely
    # a LoRaWAN device of the same sort whose model was mistyped or left out.
    mapped_kinds = {device.kind for device in settings.devices if vendor_map_for(device.model, maps)}
    for device in settings.devices:
        if not device.active or vendor_map_for(device.model, maps) is not None:
            continue
        close = _close_model(device.model, maps) if device.model is not None else None
        if close is None and device.kind not in mapped_kinds:
            continue  # most likely a device that sends another format: its model selects nothing
        shown = "has no model" if device.model is None else f"model {device.model!r} names no vendor map"
        why = f" (did you mean {close!r}?)" if close else f" (other {device.kind} devices use vendor maps)"
        yield Finding(
            Severity.WARNING, _device_field(device, "model"),
            f"{shown}{why}, so the attributes of its LoRaWAN uplinks keep the decoder's own field names, "
            "which the rules do not read",
            f"set model to the name of a vendor map ({', '.join(repr(name) for name in sorted(maps))}) or "
            f"add a map for {device.model or 'it'} under vendor_maps (docs/formats.md)",
        )


def _close_model(model: str, maps: Mapping[str, VendorMap]) -> str | None:
    folded = {name.casefold(): name for name in maps}
    key = model.casefold().strip()
    within = [name for fold, name in folded.items() if key and (key in fold or fold in key)]
    if len(within) == 1:
        return within[0]  # `EM310-UDL` for `Milesight EM310-UDL`
    # Stricter than the default 0.6, which would take "generic loop detector" for "generic fill fraction".
    close = difflib.get_close_matches(key, list(folded), n=1, cutoff=0.85)
    return folded[close[0]] if close else None


def _unit_suffix(attribute: str) -> str:
    return next((suffix for suffix in sorted(NUMERIC_UNIT_SUFFIXES, key=len, reverse=True)
                 if attribute.endswith(suffix)), "")


def _vendor_map_attributes(settings: Settings) -> Iterator[Finding]:
    rules = enabled_rules(settings.rules)
    kinds_of_map: dict[str, set[str]] = {}
    for device in settings.devices:
        name = vendor_map_for(device.model, settings.vendor_maps)
        if device.active and name is not None:
            kinds_of_map.setdefault(name, set()).add(device.kind)
    for name, kinds in kinds_of_map.items():
        read = frozenset().union(*(attributes_read(rules, kind) for kind in kinds))
        shown_kinds = ", ".join(sorted(kinds))
        for index, field in enumerate(settings.vendor_maps[name].fields):
            attribute = field.attribute
            if attribute in read:
                continue
            where = f"vendor_maps[{name!r}].fields[{index}].attribute"
            # A read attribute with the same name up to a typo, or the same name with a unit suffix
            # where the map has none: the map meant that one.
            close = _close(attribute, (candidate for candidate in read
                                       if _unit_suffix(attribute) in ("", _unit_suffix(candidate))))
            if close is not None:
                yield Finding(
                    Severity.WARNING, where,
                    f"{field.source!r} becomes {attribute!r}, which no enabled rule reads for {shown_kinds} "
                    f"devices (did you mean {close!r}?): the readings are stored but never judged",
                    f"set attribute: {close}{' and its unit' if not _unit_suffix(attribute) else ''}",
                )
                continue
            rules_read = ", ".join(sorted(read)) or "nothing"
            yield Finding(
                Severity.NOTE, where,
                f"{field.source!r} becomes {attribute!r}, which no enabled rule reads for {shown_kinds} "
                f"devices: it is stored, never judged (the rules read {rules_read})",
                "nothing if it is only for the record; else map it to an attribute a rule reads",
            )


def _bin_depths(settings: Settings) -> Iterator[Finding]:
    """A bin whose vendor map gives a distance but no fill level needs its depth to become a fill."""
    for device in settings.devices:
        name = vendor_map_for(device.model, settings.vendor_maps)
        if not device.active or device.kind != "bin" or name is None or "bin_depth_mm" in device.install:
            continue
        produced = {field.attribute for field in settings.vendor_maps[name].fields}
        if "distance_mm" in produced and "fill_pct" not in produced:
            yield Finding(
                Severity.WARNING, _device_field(device, "install.bin_depth_mm"),
                f"missing: its vendor map {name!r} gives distance_mm, which becomes a fill level only with "
                "the bin's depth, so no fill rule (bin_overflow, bin_near_full) ever judges this bin",
                "add install: {bin_depth_mm: <distance from the sensor to the bottom of the empty bin>}",
            )


def _stuck_sensor_kinds(settings: Settings) -> Iterator[Finding]:
    watched = settings.rules.stuck_sensor.attributes
    if not settings.rules.stuck_sensor.enabled:
        return
    for kind in watched:
        if kind not in StuckSensorRule.kinds:
            yield Finding(
                Severity.WARNING, f"rules.stuck_sensor.attributes.{kind}",
                f"the stuck-sensor check sees only {', '.join(sorted(StuckSensorRule.kinds))} events"
                f"{_did_you_mean(kind, StuckSensorRule.kinds)}, so these attributes are never watched",
                "use one of those kinds as the key",
            )


# --- threshold overrides --------------------------------------------------------------------------


def _rules_by_name() -> dict[str, type[Rule[Any]]]:
    return {rule.name: rule for rule in RULE_SECTIONS.values()}


def _other_kind_findings(where: str, overrides: Mapping[str, Mapping[str, float]],
                         kind: str) -> Iterator[Finding]:
    """Overrides for a rule that never judges `kind`. Unknown rules and settings, and values out of
    range, are refused when the configuration is loaded (core/rule_overrides.py); an override that is
    valid but can never apply is only found here."""
    by_name = _rules_by_name()
    for rule_name in overrides:
        rule = by_name.get(rule_name)
        if rule is None or kind in rule.kinds or ANY_KIND in rule.kinds:
            continue
        yield Finding(
            Severity.WARNING, f"{where}.{rule_name}",
            f"{rule_name} judges {', '.join(sorted(rule.kinds))} devices, not {kind!r} ones, so these "
            "values are never used",
            "remove them, or move them to the device or kind they were meant for",
        )


def _device_thresholds(settings: Settings) -> Iterator[Finding]:
    for device in settings.devices:
        yield from _other_kind_findings(_device_field(device, "thresholds"), device.thresholds, device.kind)


def _zone_thresholds(settings: Settings) -> Iterator[Finding]:
    zones = {device.tags["zone"] for device in settings.devices if "zone" in device.tags}
    for zone in settings.rules.zone_thresholds:
        if zone not in zones:
            yield Finding(
                Severity.WARNING, f"rules.zone_thresholds.{zone}",
                f"no registered device is tagged zone: {zone}{_did_you_mean(zone, zones)}, so these values "
                "apply to no device",
                f"tag the zone's devices with zone: {zone}, or use the zone tag they have",
            )


def _kind_thresholds(settings: Settings) -> Iterator[Finding]:
    kinds = {device.kind for device in settings.devices}
    for kind, overrides in settings.rules.kind_thresholds.items():
        where = f"rules.kind_thresholds.{kind}"
        if kind not in kinds:
            yield Finding(
                Severity.WARNING, where,
                f"no registered device is of kind {kind!r}{_did_you_mean(kind, kinds)}, so these values "
                "apply to no device",
                "use the kind the devices are registered with",
            )
            continue
        yield from _other_kind_findings(where, overrides, kind)
