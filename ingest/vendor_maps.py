"""Vendor field maps: a network server's decoded payload -> citywatch attributes, driven by configuration.

Real decoders differ: the Milesight EM310-UDL decoder sends `{"distance": 2116, "battery": 92}` as
numbers in mm and %, the Dragino LDDS75 decoder `{"Distance": "1234 mm", "Bat": "3.42 V"}` as strings
with units, or the sentinel text "Invalid Reading" / "No Sensor" instead of a distance. A map says which
decoded field is which attribute and in which unit; this module converts, so a new sensor model needs
configuration (configs/vendor_maps.yaml), not code.
"""

from __future__ import annotations

import math
import re
from typing import Any

from core.ingest_config import SentinelAction, VendorField, VendorMap
from ingest.codecs.base import CodecError
from ingest.codecs.common import is_finite_number

SENSOR_FAULT = "sensor_fault"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"

_NUMBER_WITH_UNIT = re.compile(
    r"\s*(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>[^\d\s].*?)?\s*"
)
# Unit spellings -> (dimension, factor to the dimension's base unit, offset). Base units: mm, V, %, C.
_UNITS: dict[str, tuple[str, float, float]] = {
    "mm": ("length", 1.0, 0.0),
    "cm": ("length", 10.0, 0.0),
    "m": ("length", 1000.0, 0.0),
    "v": ("voltage", 1.0, 0.0),
    "mv": ("voltage", 0.001, 0.0),
    "%": ("fraction", 1.0, 0.0),
    "pct": ("fraction", 1.0, 0.0),
    "fraction": ("fraction", 100.0, 0.0),
    "c": ("temperature", 1.0, 0.0),
    "°c": ("temperature", 1.0, 0.0),
    "cel": ("temperature", 1.0, 0.0),
    "k": ("temperature", 1.0, -273.15),
    "deg": ("angle", 1.0, 0.0),
    "°": ("angle", 1.0, 0.0),
}
# Attribute suffix -> (dimension, factor from the dimension's base unit).
_TARGETS: dict[str, tuple[str, float]] = {
    "_mm": ("length", 1.0),
    "_cm": ("length", 0.1),
    "_m": ("length", 0.001),
    "_v": ("voltage", 1.0),
    "_mv": ("voltage", 1000.0),
    "_pct": ("fraction", 1.0),
    "_c": ("temperature", 1.0),
    "_deg": ("angle", 1.0),
}


def apply_vendor_map(vendor_map: VendorMap, decoded: dict[str, Any], where: str) -> dict[str, Any]:
    """The attributes of one decoded payload; CodecError naming the field for what cannot be converted.

    `where` prefixes field names in error details (e.g. `uplink_message.decoded_payload`).
    """
    attributes: dict[str, Any] = {}
    dropped: list[str] = []
    used: set[str] = set()
    for field in vendor_map.fields:
        found, raw = _lookup(decoded, field.source)
        path = f"{where}.{field.source}"
        if not found or raw is None:
            if field.required:
                raise CodecError(MISSING_FIELD, f"{path}: required by the vendor map, missing")
            continue
        used.add(field.source.split(".", 1)[0])
        if isinstance(raw, str) and raw.strip() in field.sentinels:
            if field.on_sentinel is SentinelAction.DEAD_LETTER:
                raise CodecError(
                    SENSOR_FAULT, f"{path}: the sensor reported {raw.strip()!r} instead of a value"
                )
            dropped.append(f"{field.attribute}: {raw.strip()}")
            continue
        attributes[field.attribute] = convert(field, raw, path)
    if vendor_map.keep_unmapped:
        for key, value in decoded.items():
            if key not in used and key not in attributes:
                attributes[key] = value
    if dropped:
        attributes["dropped_fields"] = dropped
    return attributes


def convert(field: VendorField, raw: Any, path: str) -> Any:
    """One decoded value in the attribute's unit."""
    if field.values is not None and isinstance(raw, str | bool | int):
        key = str(raw).lower() if isinstance(raw, bool) else str(raw)
        if key in field.values:
            return field.values[key]
        allowed = ", ".join(repr(v) for v in field.values)
        raise CodecError(INVALID_FIELD, f"{path}: {_preview(raw)} is not one of {allowed}")
    target = next((t for suffix, t in _TARGETS.items() if field.attribute.endswith(suffix)), None)
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        if target is None:
            return raw
        raise CodecError(
            INVALID_FIELD, f"{path}: expected a number or a number with a unit, got {_preview(raw)}"
        )
    unit = field.unit
    if isinstance(raw, str):
        match = _NUMBER_WITH_UNIT.fullmatch(raw)
        if match is None:
            if target is None:
                return raw
            raise CodecError(
                INVALID_FIELD, f"{path}: expected a number or a number with a unit, got {_preview(raw)}"
            )
        number = float(match["number"])
        unit = match["unit"] or unit
    elif is_finite_number(raw):
        number = float(raw)
    else:
        number = math.inf
    if not math.isfinite(number):
        raise CodecError(INVALID_FIELD, f"{path}: {_preview(raw)} is not a finite number")
    if target is None or unit is None:
        return _tidy(number, path)
    known = _UNITS.get(unit.strip().lower())
    if known is None:
        raise CodecError(INVALID_FIELD, f"{path}: unknown unit {unit!r} in {_preview(raw)}")
    dimension, factor, offset = known
    if dimension != target[0]:
        raise CodecError(INVALID_FIELD, f"{path}: unit {unit!r} cannot become {field.attribute}")
    return _tidy((number + offset) * factor * target[1] if offset else number * factor * target[1], path)


def _tidy(number: float, path: str = "value") -> float | int:
    if not math.isfinite(number):
        raise CodecError(INVALID_FIELD, f"{path}: the value overflows after unit conversion")
    rounded = round(number, 6)
    return int(rounded) if rounded.is_integer() and abs(rounded) < 2**53 else rounded


def _lookup(decoded: dict[str, Any], source: str) -> tuple[bool, Any]:
    node: Any = decoded
    for part in source.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _preview(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:60] + "..."
