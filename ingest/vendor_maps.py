"""Vendor field maps: a network server's decoded payload -> citywatch attributes, driven by configuration.

Real decoders differ, between vendors and between versions of one vendor's decoder: the Milesight
EM310-UDL decoder sends `{"distance": 2116, "battery": 92}` as numbers in mm and %, Dragino's LDDS75
decoders `{"Distance": 1234, "Bat": 3.42}` or `{"Distance": "1234 mm", "Bat": "3.42 V"}`, the TTN device
repository's `{"distance": "No Sensor"}`. A map says which decoded field is which attribute and in which
unit; this module converts, so a new sensor model needs configuration (configs/vendor_maps.yaml), not code.

Names are matched as decoders and people vary them (case, `_`, aliases; model names with or without the
vendor), sentinels by what they mean ("0.00" is also "0.00 °C"). What a map leaves out is reported by
VendorMapNotices, and vendor_map_for is the one model lookup, for ingest and for configuration checks.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.ingest_config import SentinelAction, VendorField, VendorMap
from core.metrics import Metrics
from ingest.codecs.base import CodecError
from ingest.codecs.common import is_finite_number

log = logging.getLogger(__name__)

SENSOR_FAULT = "sensor_fault"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"

_NUMBER_WITH_UNIT = re.compile(
    r"\s*(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>[^\d\s].*?)?\s*"
)
_SEPARATORS = re.compile(r"[\s_\-]+")
_WORDS = re.compile(r"[0-9a-z]+")
OTHER_LABEL = "other"
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


@dataclass(frozen=True)
class MappedPayload:
    """What a vendor map made of one decoded payload."""

    attributes: dict[str, Any]
    unmapped: list[str]  # top-level decoded fields no entry (nor `ignore`) names, in payload order


def apply_vendor_map(vendor_map: VendorMap, decoded: dict[str, Any], where: str) -> dict[str, Any]:
    """The attributes of one decoded payload; CodecError naming the field for what cannot be converted.

    `where` prefixes field names in error details (e.g. `uplink_message.decoded_payload`).
    """
    return map_payload(vendor_map, decoded, where).attributes


def map_payload(vendor_map: VendorMap, decoded: dict[str, Any], where: str) -> MappedPayload:
    """apply_vendor_map, and which decoded fields the map left out."""
    attributes: dict[str, Any] = {}
    dropped: list[str] = []
    for field in vendor_map.fields:
        key, raw = _find(decoded, field.names)
        if key is None or raw is None:
            if field.required:
                raise CodecError(
                    MISSING_FIELD, f"{where}.{field.source}: required by the vendor map, missing"
                )
            continue
        path = f"{where}.{key}"
        sentinel = _sentinel(field, raw)
        if sentinel is not None:
            if field.on_sentinel is SentinelAction.DEAD_LETTER:
                raise CodecError(SENSOR_FAULT, f"{path}: the sensor reported {sentinel} instead of a value")
            dropped.append(f"{field.attribute}: {_shown(raw)}")
            continue
        attributes[field.attribute] = convert(field, raw, path)
    consumed = {field_key(name.split(".", 1)[0]) for field in vendor_map.fields for name in field.names}
    consumed.update(field_key(name) for name in vendor_map.ignore)
    left_out = [key for key in decoded if field_key(key) not in consumed]
    if vendor_map.keep_unmapped:
        # Copied under their own names; one that would overwrite a mapped attribute still counts as left out.
        clashes = [key for key in left_out if key in attributes]
        attributes.update((key, decoded[key]) for key in left_out if key not in attributes)
        left_out = clashes
    if dropped:
        attributes["dropped_fields"] = dropped
    return MappedPayload(attributes, left_out)


def field_key(name: str) -> str:
    """A decoded field's name as matching sees it: decoders vary case and `_` / `-` / space between words."""
    return _SEPARATORS.sub("", name).casefold()


def _sentinel(field: VendorField, raw: Any) -> str | None:
    """How to name the sentinel `raw` is (e.g. "'No Sensor'"), or None for a reading."""
    if not field.sentinels and field.invalid_below is None:
        return None
    number = _number_of(raw)
    if isinstance(raw, str):
        text = " ".join(raw.split()).casefold()
        if any(" ".join(s.split()).casefold() == text for s in field.sentinels):
            return repr(raw.strip())
    if number is not None:
        if any(_number_of(s) == number for s in field.sentinels):
            return repr(raw.strip()) if isinstance(raw, str) else repr(raw)
        limit = field.invalid_below
        if limit is not None and _in_field_unit(field, raw, number) < limit:
            unit = f" {field.unit}" if field.unit else ""
            return f"{_shown(raw)!r} (below {limit:g}{unit}: not a valid reading)"
    return None


def _in_field_unit(field: VendorField, raw: Any, number: float) -> float:
    """`number` (read from `raw`) in the field's `unit`, for a raw value that names another unit."""
    match = _NUMBER_WITH_UNIT.fullmatch(raw) if isinstance(raw, str) else None
    if match is None or not match["unit"] or field.unit is None:
        return number
    sent = _UNITS.get(match["unit"].strip().lower())
    wanted = _UNITS.get(field.unit.strip().lower())
    if sent is None or wanted is None or sent[0] != wanted[0]:
        return number  # convert() reports the unit
    return ((number + sent[2]) * sent[1]) / wanted[1] - wanted[2]


def _number_of(value: Any) -> float | None:
    """The number in a bare number or a number with a unit ("0.00 °C"); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        match = _NUMBER_WITH_UNIT.fullmatch(value)
        if match is not None:
            return float(match["number"])
    return None


def _shown(raw: Any) -> str:
    return raw.strip() if isinstance(raw, str) else str(raw)


def convert(field: VendorField, raw: Any, path: str) -> Any:
    """One decoded value in the attribute's unit."""
    if field.values is not None and isinstance(raw, str | bool | int):
        key = str(raw).lower() if isinstance(raw, bool) else str(raw)
        if key in field.values:
            return field.values[key]
        # "Tilt" and "tilt " are the same word to a decoder's author.
        wanted = key.strip().casefold()
        near = next((v for k, v in field.values.items() if k.strip().casefold() == wanted), None)
        if near is not None:
            return near
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


def _find(decoded: dict[str, Any], names: list[str]) -> tuple[str | None, Any]:
    """The first of `names` the payload has: (the path as the payload spells it, its value)."""
    for name in names:
        path, value = _lookup(decoded, name)
        if path is not None:
            return path, value
    return None, None


def _lookup(decoded: dict[str, Any], source: str) -> tuple[str | None, Any]:
    node: Any = decoded
    spelled: list[str] = []
    for part in source.split("."):
        if not isinstance(node, dict):
            return None, None
        key = part if part in node else next((k for k in node if field_key(k) == field_key(part)), None)
        if key is None:
            return None, None
        spelled.append(key)
        node = node[key]
    return ".".join(spelled), node


def _preview(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:60] + "..."


def vendor_map_for(model: str | None, vendor_maps: Mapping[str, VendorMap]) -> VendorMap | None:
    """The vendor map a device's `model` names, matched as people write model names.

    In order: the map's own name, then its `aliases`, each whatever the case, spacing and punctuation
    ("dragino ldds75" finds "Dragino LDDS75"); then a model written without the vendor's leading words
    ("LDDS75", "EM310 UDL"), if exactly one map ends with it. None when nothing (or more than one map)
    matches.
    """
    named = vendor_map_named(model, vendor_maps)
    return None if named is None else named[1]


def vendor_map_named(model: str | None, vendor_maps: Mapping[str, VendorMap]) -> tuple[str, VendorMap] | None:
    """vendor_map_for, with the name the map has in the configuration."""
    if not model:
        return None
    if model in vendor_maps:
        return model, vendor_maps[model]
    wanted = _model_words(model)
    if not wanted:
        return None
    joined = "".join(wanted)
    by_name = [(name, m) for name, m in vendor_maps.items() if _spelled(name) == joined]
    by_alias = [(name, m) for name, m in vendor_maps.items() if any(_spelled(a) == joined for a in m.aliases)]
    by_ending = [(name, m) for name, m in vendor_maps.items()
                 if any(_ends_with(_model_words(n), joined) for n in [name, *m.aliases])]
    for found in (by_name, by_alias, by_ending):
        if found:
            return found[0] if len(found) == 1 else None
    return None


def _spelled(name: str) -> str:
    return "".join(_model_words(name))


def _model_words(name: str) -> list[str]:
    return _WORDS.findall(name.casefold())


def _ends_with(words: list[str], joined: str) -> bool:
    """Whether `joined` is a map's name without its leading vendor words: words without a digit, so that
    "EM310-UDL" ends "milesight em310 udl" but "UDL" does not, and "DDS75" does not end "dragino ldds75"."""
    for start in range(1, len(words)):
        if any(ch.isdigit() for ch in words[start - 1]):
            return False
        if "".join(words[start:]) == joined:
            return True
    return False


class VendorMapNotices:
    """Says what vendor maps leave out, so no decoded field vanishes without a trace.

    A decoded field the device's map does not consume is counted per (model, field) and logged the first
    time; a device whose `model` names no map is counted per model and logged the first time. Decoders
    and the registry choose these names, so labels and log lines are bounded: past MAX_LABELS distinct
    pairs (or models) the rest are counted under "other" and logged once together.
    """

    MAX_LABELS = 256

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self._fields = _FirstSeen(self.MAX_LABELS)
        self._models = _FirstSeen(self.MAX_LABELS)

    def unmapped(self, model: str, map_name: str, fields: list[str]) -> None:
        for field in fields:
            with self._lock:
                known, first = self._fields.see((model, field))
            if first and known:
                log.warning(
                    "decoded field %r of model %r is not in vendor map %r: it is not stored (map it, or "
                    "list it under `ignore`)", field, model, map_name,
                )
            elif first:
                log.warning(
                    "more than %d unmapped decoded fields: further ones (now %r of model %r) are counted "
                    "as 'other' and not logged", self.MAX_LABELS, field, model,
                )
            if self._metrics is not None:
                labels = (model, field) if known else (OTHER_LABEL, OTHER_LABEL)
                self._metrics.unmapped_fields.labels(*labels).inc()

    def without_map(self, model: str) -> None:
        with self._lock:
            known, first = self._models.see(model)
        if first and known:
            log.warning(
                "device model %r names no vendor map: its decoded fields are stored as the decoder "
                "names them, unconverted (add a map to vendor_maps, or correct the model)", model,
            )
        elif first:
            log.warning(
                "more than %d device models name no vendor map: further ones (now %r) are counted as "
                "'other' and not logged", self.MAX_LABELS, model,
            )
        if self._metrics is not None:
            self._metrics.uplinks_without_vendor_map.labels(model if known else OTHER_LABEL).inc()


class _FirstSeen:
    """Remembers up to `limit` keys; says whether a key is remembered and whether this is the first time
    it (or, past the limit, any key beyond it) was seen."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[Any] = set()
        self._overflowed = False

    def see(self, key: Any) -> tuple[bool, bool]:
        if key in self._seen:
            return True, False
        if len(self._seen) < self._limit:
            self._seen.add(key)
            return True, True
        first_overflow = not self._overflowed
        self._overflowed = True
        return False, first_overflow
