"""Fill level of a bin from what its sensor reports: `fill_pct` directly, or an ultrasonic `distance_mm`.

An ultrasonic sensor in the lid measures the distance down to the rubbish. With the device's install
parameters `bin_depth_mm` (sensor to the bottom of the empty bin) and optional `sensor_offset_mm`
(sensor to the full line: the sensor usually sits above the rim and cannot see closer than its blind
zone), fill = 100 * (depth - distance) / (depth - offset), clamped to 0..100. Without an offset the
full line is at the sensor. A bin that reports distance but has no registered depth has no fill level.
"""

from __future__ import annotations

from core.models import Event
from processors.devices import DeviceLookup
from processors.rules._common import number


def fill_from_distance(distance_mm: float, depth_mm: float, offset_mm: float = 0.0) -> float | None:
    """Fill percentage from the measured distance, clamped to 0..100; None for an unusable geometry."""
    span = depth_mm - offset_mm
    if span <= 0:
        return None
    fill = 100.0 * (depth_mm - distance_mm) / span
    return min(100.0, max(0.0, fill))


def fill_pct_of(event: Event, devices: DeviceLookup) -> float | None:
    """The bin's fill level in percent, or None when the event does not tell it."""
    fill = number(event, "fill_pct")
    if fill is not None:
        return fill
    distance = number(event, "distance_mm")
    if distance is None:
        return None
    device = devices.get(event.device_id)
    if device is None or "bin_depth_mm" not in device.install:
        return None
    return fill_from_distance(distance, device.install["bin_depth_mm"],
                              device.install.get("sensor_offset_mm", 0.0))
