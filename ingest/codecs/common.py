"""Helpers the vendor codecs share: JSON parsing, typed field access and time checks, all raising
CodecError with a detail that names the field (`uplink_message.f_port: expected an integer, got 'x'`).

Vendor formats grow fields with every release, so these codecs read what they need from an untyped
decode and ignore the rest, instead of a strict struct that would reject the next firmware's extra key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec

from core.models import Location
from ingest.codecs.base import CodecError

# One definition of the shared reasons and of the short repr of a wrong value, for every codec.
from ingest.codecs.explain import INVALID_FIELD, MISSING_FIELD, malformed, preview
from ingest.codecs.native import MAX_FUTURE_MS, MIN_EVENT_TIME_MS
from ingest.codecs.time_scale import scale_hint

IMPLAUSIBLE_TIME = "implausible_time"
UNSUPPORTED = "unsupported_message"

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<h>\d{2}):(?P<m>\d{2}):(?P<s>\d{2})(?:\.(?P<frac>\d{1,12}))?"
    r"(?P<tz>[Zz]|[+-]\d{2}:\d{2})"
)


def is_finite_number(value: Any) -> bool:
    """A JSON number that is a finite float once converted (JSON integers can be arbitrarily large)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def parse_json(payload: bytes) -> Any:
    """Untyped JSON, or CodecError(malformed_json)."""
    try:
        return msgspec.json.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise malformed(payload, exc) from None


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CodecError(INVALID_FIELD, f"{path or 'payload'}: expected an object, got {preview(value)}")
    return value


def field(node: dict[str, Any], key: str, path: str, *, required: bool = True) -> Any:
    if key not in node or node[key] is None:
        if required:
            raise CodecError(MISSING_FIELD, f"{join(path, key)}: required field is missing")
        return None
    return node[key]


def text(
    node: dict[str, Any], key: str, path: str, *, required: bool = True, max_len: int = 256
) -> str | None:
    value = field(node, key, path, required=required)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise CodecError(
            INVALID_FIELD,
            f"{join(path, key)}: expected a string of 1..{max_len} characters, got {preview(value)}",
        )
    return value


def number(
    node: dict[str, Any],
    key: str,
    path: str,
    *,
    required: bool = True,
    low: float | None = None,
    high: float | None = None,
) -> float | None:
    value = field(node, key, path, required=required)
    if value is None:
        return None
    if not is_finite_number(value):
        raise CodecError(INVALID_FIELD, f"{join(path, key)}: expected a number, got {preview(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise CodecError(INVALID_FIELD, f"{join(path, key)}: {value} is outside {low}..{high}")
    return value


def integer(
    node: dict[str, Any],
    key: str,
    path: str,
    *,
    required: bool = True,
    low: int | None = None,
    high: int | None = None,
) -> int | None:
    value = field(node, key, path, required=required)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError(INVALID_FIELD, f"{join(path, key)}: expected an integer, got {preview(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise CodecError(INVALID_FIELD, f"{join(path, key)}: {value} is outside {low}..{high}")
    return value


def boolean(node: dict[str, Any], key: str, path: str, *, required: bool = True) -> bool | None:
    value = field(node, key, path, required=required)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise CodecError(INVALID_FIELD, f"{join(path, key)}: expected true or false, got {preview(value)}")
    return value


def array(node: dict[str, Any], key: str, path: str, *, required: bool = True) -> list[Any] | None:
    value = field(node, key, path, required=required)
    if value is None:
        return None
    if not isinstance(value, list):
        raise CodecError(INVALID_FIELD, f"{join(path, key)}: expected an array, got {preview(value)}")
    return value


def strings(node: dict[str, Any], key: str, path: str) -> list[str]:
    """An optional array of strings (absent or null: empty)."""
    values = array(node, key, path, required=False) or []
    for index, item in enumerate(values):
        if not isinstance(item, str):
            raise CodecError(
                INVALID_FIELD, f"{join(join(path, key), index)}: expected a string, got {preview(item)}"
            )
    return list(values)


def rfc3339_ms(value: Any, path: str) -> int:
    """Epoch ms of an RFC 3339 time with an offset; any number of fractional digits (ChirpStack sends 9)."""
    if not isinstance(value, str):
        raise CodecError(INVALID_FIELD, f"{path}: expected an RFC 3339 time string, got {preview(value)}")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise CodecError(INVALID_FIELD, f"{path}: {preview(value)} is not an RFC 3339 time with an offset")
    tz = match["tz"]
    offset = (
        UTC
        if tz in ("Z", "z")
        else timezone((1 if tz[0] == "+" else -1) * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
    )
    try:
        moment = datetime.fromisoformat(f"{match['date']}T{match['h']}:{match['m']}:{match['s']}").replace(
            tzinfo=offset
        )
    except ValueError:
        raise CodecError(INVALID_FIELD, f"{path}: {preview(value)} is not a valid date and time") from None
    millis = int((match["frac"] or "0")[:3].ljust(3, "0"))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1) + millis


# Epoch seconds beyond this (year 33658) are not a time: refusing them keeps the arithmetic finite.
MAX_EPOCH_SECONDS = 1e12
# Without the time a message was received, a number is taken for a time if it falls before 2100.
_LATEST_WITHOUT_RECEIPT_MS = 4_102_444_800_000


def seconds_ms(value: Any, path: str) -> int:
    """Epoch ms of a float epoch-seconds value (Frigate's frame_time)."""
    if not is_finite_number(value) or not abs(value) < MAX_EPOCH_SECONDS:
        hint = scale_hint(value, "seconds", MIN_EVENT_TIME_MS, _LATEST_WITHOUT_RECEIPT_MS) if (
            is_finite_number(value)) else ""
        raise CodecError(INVALID_FIELD, f"{path}: expected epoch seconds, got {preview(value)}{hint}")
    return round(value * 1000)


def plausible(time_ms: int, path: str, received_time_ms: int) -> int:
    """The time, unless it is before 2000 or more than a day ahead of the time we received it; the
    detail then says which unit the number looks like (seconds, microseconds, nanoseconds)."""
    latest_ms = received_time_ms + MAX_FUTURE_MS
    if time_ms < MIN_EVENT_TIME_MS or time_ms > latest_ms:
        hint = scale_hint(time_ms, "milliseconds", MIN_EVENT_TIME_MS, latest_ms)
        problem = ("is before 2000-01-01" if time_ms < MIN_EVENT_TIME_MS else
                   f"is more than a day ahead of the time it was received ({received_time_ms} ms)")
        raise CodecError(IMPLAUSIBLE_TIME, f"{path}: {time_ms} ms {problem}{hint}")
    return time_ms


def location(lat: Any, lon: Any, path: str) -> Location:
    for name, value, limit in (("latitude", lat, 90.0), ("longitude", lon, 180.0)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not -limit <= value <= limit:
            raise CodecError(
                INVALID_FIELD, f"{path}.{name}: expected -{limit:g}..{limit:g}, got {preview(value)}"
            )
    return Location(lat=float(lat), lon=float(lon))


def first_location(candidates: Sequence[tuple[dict[str, Any] | None, str]]) -> Location | None:
    """The first {latitude, longitude} object among the candidates; (0, 0) means 'unset' in LoRaWAN."""
    for node, path in candidates:
        if not isinstance(node, dict) or "latitude" not in node or "longitude" not in node:
            continue
        found = location(node["latitude"], node["longitude"], path)
        if found.lat == 0 and found.lon == 0:
            continue
        return found
    return None
