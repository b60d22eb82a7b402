"""What rules may ask about a device: a read-only lookup, so rules stay pure and testable."""

from __future__ import annotations

from typing import Protocol

from citywatch.settings import DeviceSettings


class DeviceLookup(Protocol):
    def get(self, device_id: str) -> DeviceSettings | None: ...


class NoDevices:
    """A lookup that knows no device: rules fall back to their configured defaults."""

    def get(self, device_id: str) -> DeviceSettings | None:
        return None


def threshold(devices: DeviceLookup, device_id: str, rule: str, name: str, default: float) -> float:
    """The device's override of a rule setting, else the rule's configured default."""
    device = devices.get(device_id)
    if device is None:
        return default
    return device.thresholds.get(rule, {}).get(name, default)
