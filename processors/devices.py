"""What rules may ask about a device: a read-only lookup, so rules stay pure and testable."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from core.settings import DeviceSettings


class DeviceLookup(Protocol):
    def get(self, device_id: str) -> DeviceSettings | None: ...


class NoDevices:
    """A lookup that knows no device: rules fall back to their configured defaults."""

    def get(self, device_id: str) -> DeviceSettings | None:
        return None


def threshold(devices: DeviceLookup, device_id: str, rule: str, name: str, default: float,
              zones: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None) -> float:
    """The device's override of a rule setting, else its zone's (`zones`: {zone: {rule: {name: value}}},
    the zone from the device's `zone` tag), else the rule's configured default."""
    device = devices.get(device_id)
    if device is None:
        return default
    own = device.thresholds.get(rule, {})
    if name in own:
        return own[name]
    zone = device.tags.get("zone")
    if zones and zone is not None:
        return zones.get(zone, {}).get(rule, {}).get(name, default)
    return default
