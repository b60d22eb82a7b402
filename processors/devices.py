"""What rules may ask about a device: a read-only lookup, so rules stay pure and testable, and the one
resolver every rule reads its numeric thresholds through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from core.settings import DeviceSettings

# {group (a zone tag, or an event kind): {rule: {setting: value}}}
GroupedThresholds = Mapping[str, Mapping[str, Mapping[str, float]]]

# Shared by every device without overrides: never written to (typed read-only).
_NO_OVERRIDES: Mapping[str, float] = {}


class DeviceLookup(Protocol):
    def get(self, device_id: str) -> DeviceSettings | None: ...


class NoDevices:
    """A lookup that knows no device: rules fall back to their configured defaults."""

    def get(self, device_id: str) -> DeviceSettings | None:
        return None


class Thresholds:
    """Where a rule's numeric setting for one device comes from, most specific first:

    1. the camera zone the judged object is in (`traffic.cameras[].zones[].thresholds`; traffic rules);
    2. the device's own `thresholds` in the registry;
    3. its zone tag's entry in `rules.zone_thresholds` (the device's `zone` tag);
    4. the event kind's entry in `rules.kind_thresholds`;
    5. the rule's own default for that kind, where it has one (`kind_default`), else its configured value.

    Overrides are keyed by the rule's violation type and the setting's name (checked at load by
    core.rule_overrides). The registry is read on every call: a device changed at run time applies at once.
    """

    def __init__(self, devices: DeviceLookup | None = None, zones: GroupedThresholds | None = None,
                 kinds: GroupedThresholds | None = None) -> None:
        self.devices = devices or NoDevices()
        self.zones = zones or {}
        self.kinds = kinds or {}

    def value(self, rule: str, name: str, default: float, *, device_id: str, kind: str,
              camera_zone: Mapping[str, Mapping[str, float]] | None = None) -> float:
        if camera_zone:
            value = camera_zone.get(rule, {}).get(name)
            if value is not None:
                return value
        if not self.zones and not self.kinds:  # the usual configuration: only a device's own, if any
            device = self.devices.get(device_id)
            if device is None or not device.thresholds:
                return default
            return device.thresholds.get(rule, _NO_OVERRIDES).get(name, default)
        return self.overrides(rule, device_id, kind).get(name, default)

    def overrides(self, rule: str, device_id: str, kind: str) -> Mapping[str, float]:
        """The rule's settings overridden for this device (levels 2-4 above, the most specific winning),
        usually none: a rule that reads several settings for one event looks the device up once."""
        own: Mapping[str, float] | None = None
        by_zone: Mapping[str, float] | None = None
        device = self.devices.get(device_id)
        if device is not None:
            if device.thresholds:
                own = device.thresholds.get(rule)
            if self.zones:
                zone = device.tags.get("zone")
                if zone is not None:
                    by_zone = self.zones.get(zone, {}).get(rule)
        by_kind = self.kinds.get(kind, {}).get(rule) if self.kinds else None
        if not by_zone and not by_kind:
            return own or _NO_OVERRIDES
        return {**(by_kind or {}), **(by_zone or {}), **(own or {})}
