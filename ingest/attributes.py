"""Checks on measured attributes that hold whatever format a reading arrived in.

Attributes carry their unit in their name (docs/model.md): `fill_pct`, `temperature_c`. A top-level
attribute ending in a unit suffix is a measurement and must be a number (or null: no reading), so that
"fill_pct": "full" is rejected at ingest instead of silently failing every rule that reads it. The
attributes citywatch judges on also have a physical range: a fill level of 250% is a broken sensor or
decoder, not a full bin. The normalizer applies both checks to every event of every codec.
"""

from __future__ import annotations

from typing import Any

NUMERIC_UNIT_SUFFIXES = (
    "_pct", "_c", "_deg", "_ugm3", "_ppm", "_ppb", "_kmh", "_mps", "_veh_h", "_ms", "_s", "_m", "_mm",
    "_cm", "_km", "_v", "_mv", "_ma", "_w", "_kw", "_kwh", "_hz", "_db", "_dba", "_lux", "_hpa", "_kg",
    "_mgl", "_mgm3",
)

# name -> inclusive range a working device can report. Ranges are physical limits, not rule thresholds.
PHYSICAL_RANGES: dict[str, tuple[float, float]] = {
    "fill_pct": (0, 100),
    "battery_pct": (0, 100),
    "occupancy_pct": (0, 100),
    "humidity_pct": (0, 100),
    "temperature_c": (-60, 200),
    "tilt_deg": (0, 180),
    "pm25_ugm3": (0, 2000),
    "pm10_ugm3": (0, 5000),
    "speed_kmh": (0, 400),
    "flow_veh_h": (0, 20000),
    "distance_mm": (0, 20000),
}

_PREVIEW_CHARS = 60
# Every store and the Kafka bus keep integers in 64 bits (SQLite INTEGER, InfluxDB integer fields,
# msgpack); JSON has no limit. A larger integer is refused here, the same way on both buses, rather
# than failing later where no dead letter can be made.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def attribute_error(attributes: dict[str, Any]) -> str | None:
    """None when the attributes pass; else a sentence naming the first bad field."""
    for name, value in attributes.items():
        if not name.endswith(NUMERIC_UNIT_SUFFIXES) or value is None:
            if isinstance(value, int | dict | list):
                beyond = _beyond_int64(value, f"attributes.{name}")
                if beyond is not None:
                    return beyond
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            shown = repr(value)
            if len(shown) > _PREVIEW_CHARS:
                shown = shown[:_PREVIEW_CHARS] + "..."
            return f"attributes.{name}: expected a number, got {shown}"
        allowed = PHYSICAL_RANGES.get(name)
        if allowed is not None and not allowed[0] <= value <= allowed[1]:
            return f"attributes.{name}: {value} is outside the physical range {allowed[0]:g}..{allowed[1]:g}"
        if isinstance(value, int):  # a float is never beyond 64 bits (its path is not made for nothing)
            beyond = _beyond_int64(value, f"attributes.{name}")
            if beyond is not None:
                return beyond
    return None


def _beyond_int64(value: Any, path: str) -> str | None:
    """The first integer outside 64 bits in a value and what it holds, named by its path."""
    if isinstance(value, int) and not isinstance(value, bool):
        if INT64_MIN <= value <= INT64_MAX:
            return None
        # Never str() a huge integer: Python refuses to convert one of more than 4,300 digits.
        shown = str(value) if value.bit_length() <= 96 else f"of {value.bit_length()} bits"
        return f"{path}: integer {shown} is beyond the 64-bit range citywatch stores (-2^63..2^63-1)"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(item, int | dict | list):
            found = _beyond_int64(item, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}")
            if found is not None:
                return found
    return None
