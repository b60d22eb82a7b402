"""Implausible reading: values no working sensor produces, beyond what ingest already rejects
(ingest/attributes.py holds the physical ranges of every attribute it knows): water and odour values
outside their plausible ranges, an ultrasonic distance longer than the bin is deep, PM2.5 above PM10
(PM10 includes PM2.5). Such a reading opens a sensor-fault incident (starting at that reading) and is
marked suspect: the rules in `hide_suspect_from` (by default those that judge the attributes checked
here) never see it, the others still do. The first plausible reading clears the incident.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from core.models import Event, Severity, Violation
from core.rule_overrides import rule_name
from core.sanitation_settings import ImplausibleReadingSettings
from processors.devices import DeviceLookup, GroupedThresholds, Thresholds
from processors.rule import Emitter, Rule
from processors.rules._common import clear_violation, number, open_violation

TYPE = "sensor_implausible"


class ImplausibleState(msgspec.Struct):
    open_violation: Violation | None = None


class ImplausibleReadingRule(Rule[ImplausibleState]):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({"bin", "air", "water", "odour"})
    reads_attributes: ClassVar[frozenset[str]] = frozenset()
    state_type: ClassVar[type[msgspec.Struct]] = ImplausibleState
    inspects_readings: ClassVar[bool] = True

    def __init__(self, settings: ImplausibleReadingSettings, devices: DeviceLookup | None = None,
                 zones: GroupedThresholds | None = None, *, kinds: GroupedThresholds | None = None) -> None:
        self.settings = settings
        self.thresholds = Thresholds(devices, zones, kinds)
        self.devices = self.thresholds.devices
        self.state_ttl_ms = settings.state_ttl_s * 1000
        hidden = settings.hide_suspect_from
        # Named by violation type or section (checked at load); the engine compares violation types.
        self.hidden_from = None if hidden == ["*"] else frozenset(rule_name(name) for name in hidden)
        self._range_order = {name: index for index, name in enumerate(settings.ranges)}
        self._ranged = frozenset(settings.ranges)

    def setting(self, event: Event, name: str, default: float) -> float:
        return self.thresholds.value(TYPE, name, default, device_id=event.device_id, kind=event.kind)

    def problems(self, event: Event) -> list[str]:
        found: list[str] = []
        ranges = self.settings.ranges
        attributes = event.attributes
        # Only the event's own attributes are looked up (a handful), not every configured range; the
        # problems still come out in the configured order. Most readings carry none of them (a bin's
        # fill, battery and temperature): that is told without building a set.
        if not self._ranged.isdisjoint(attributes):
            for name in sorted(ranges.keys() & attributes.keys(), key=self._range_order.__getitem__):
                value = number(event, name)
                low, high = ranges[name]
                if value is not None and not low <= value <= high:
                    found.append(f"{name} {value:g} outside {low:g}..{high:g}")
        if "distance_mm" in attributes:
            self._check_distance(event, found)
        if "pm25_ugm3" in attributes:
            self._check_particles(event, found)
        return found

    def _check_distance(self, event: Event, found: list[str]) -> None:
        distance = number(event, "distance_mm")
        device = self.devices.get(event.device_id)
        if distance is not None and device is not None and "bin_depth_mm" in device.install:
            depth = device.install["bin_depth_mm"]
            tolerance_mm = self.setting(event, "distance_tolerance_mm", self.settings.distance_tolerance_mm)
            if distance > depth + tolerance_mm:
                found.append(f"distance_mm {distance:g} beyond the bin depth {depth:g}")

    def _check_particles(self, event: Event, found: list[str]) -> None:
        pm25, pm10 = number(event, "pm25_ugm3"), number(event, "pm10_ugm3")
        if (pm25 is not None and pm10 is not None
                and pm25 > pm10 + self.setting(event, "pm_tolerance_ugm3", self.settings.pm_tolerance_ugm3)):
            found.append(f"pm25_ugm3 {pm25:g} above pm10_ugm3 {pm10:g}")

    def on_event(self, state: ImplausibleState | None, event: Event,
                 out: Emitter) -> ImplausibleState | None:
        problems = self.problems(event)
        state = state or ImplausibleState()
        if not problems:
            if state.open_violation is not None:
                out.violation(clear_violation(state.open_violation, event, {}))
                state.open_violation = None
            return state
        if state.open_violation is None:
            state.open_violation = open_violation(
                TYPE, event.device_id, event, [(event.event_id, event.event_time_ms, 0.0)], Severity.LOW,
                {"problems": problems, "attributes": dict(event.attributes)},
                begun_by=(event.event_id, event.event_time_ms))
            out.violation(state.open_violation)
        out.suspect("; ".join(problems), hide_from=self.hidden_from)
        return state
