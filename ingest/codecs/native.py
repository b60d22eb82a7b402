"""The native citywatch JSON format (docs/native-format.md): one event object or a batch array of them.

Decoding is one typed msgspec pass: the structs below are the format, so every structural error comes
back from msgspec with a JSON path that we turn into a field-named detail. Only the rules msgspec cannot
express (time zone present, time plausible, topic agrees with body) are checked afterwards in Python.
"""

from __future__ import annotations

import difflib
import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from citywatch.models import Event, Location, stable_id
from ingest.codecs.base import CodecError

MAX_BATCH_EVENTS = 1000
# 2000-01-01T00:00:00Z: anything older is a device with an unset clock (1970) or seconds sent as ms.
MIN_EVENT_TIME_MS = 946_684_800_000
# Device clocks drift, but a reading a day ahead of our clock is a wrong clock, not drift.
MAX_FUTURE_MS = 24 * 3600 * 1000
# Topic level after which the native topic carries the device id: citywatch/events/{device_id}.
DEVICE_LEVEL_AFTER = "events"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
# msgspec validation messages end with " - at `$.json.path`" unless the error is at the root.
_MESSAGE_AT = re.compile(r"(?P<message>.*?)(?: - at `(?P<path>[^`]*)`)?", re.DOTALL)
_BACKTICKED = re.compile(r"`([^`]*)`")
_PATH_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_VALUE_PREVIEW_CHARS = 60
# Field rules in words for error details, replacing msgspec's wording (a regex, a type union) when its
# message starts with one of the prefixes. The rules themselves are the types below.
_FIELD_RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "device_id": ("1..128 characters of A-Z a-z 0-9 . _ : -", ("Expected `str`",)),
    "kind": ("1..64 characters of a-z 0-9 _ .", ("Expected `str`",)),
    "event_id": ("a string of 1..128 characters", ("Expected `str`",)),
    "time": (
        "integer epoch milliseconds or an RFC 3339 string like '2026-11-26T05:00:00.123Z'",
        ("Expected `int | datetime`", "Invalid RFC3339"),
    ),
}


class NativeReason(StrEnum):
    """Why a native payload was rejected: the dead-letter `reason` and the metric label."""

    MALFORMED_JSON = "malformed_json"  # not JSON, not UTF-8, trailing garbage, nested too deeply
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"  # a typo such as "atributes" must not silently drop data
    INVALID_FIELD = "invalid_field"  # wrong type, out of range, bad pattern, time without offset
    IMPLAUSIBLE_TIME = "implausible_time"
    DEVICE_MISMATCH = "device_mismatch"
    EMPTY_BATCH = "empty_batch"
    BATCH_TOO_LARGE = "batch_too_large"


# `\Z`, not `$`: `$` also matches before a trailing newline, which would let "bin-1\n" through.
DeviceId = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+\Z")]
Kind = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9_.]+\Z")]
EventId = Annotated[str, Meta(min_length=1, max_length=128)]


class NativeLocation(msgspec.Struct, forbid_unknown_fields=True):
    lat: Annotated[float, Meta(ge=-90.0, le=90.0)]
    lon: Annotated[float, Meta(ge=-180.0, le=180.0)]


class NativeReading(msgspec.Struct, forbid_unknown_fields=True):
    """One event as a device publishes it. Unknown keys are rejected so a misspelt field is noticed."""

    device_id: DeviceId
    kind: Kind
    # Epoch milliseconds, or an RFC 3339 string (an offset is required: checked after decoding).
    time: int | datetime
    event_id: EventId | None = None
    location: NativeLocation | None = None
    attributes: dict[str, Any] | None = None


NativePayload = NativeReading | list[NativeReading]


class NativeCodec:
    """Decodes the native JSON format; see docs/native-format.md."""

    name = "native"

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(NativePayload)
        self._reading_fields = [field.encode_name for field in msgspec.structs.fields(NativeReading)]
        self._location_fields = [field.encode_name for field in msgspec.structs.fields(NativeLocation)]

    def decode(self, topic: str, payload: bytes, received_time_ms: int) -> list[Event]:
        try:
            decoded = self._decoder.decode(payload)
        except msgspec.ValidationError as exc:
            raise self._validation_error(payload, exc) from None
        except msgspec.DecodeError as exc:
            # msgspec says "JSON is malformed: ..." for most errors but only "Input data was truncated"
            # for a cut-off payload.
            message = str(exc)
            if not message.startswith("JSON is malformed"):
                message = f"JSON is malformed: {message[:1].lower()}{message[1:]}"
            raise CodecError(NativeReason.MALFORMED_JSON, f"payload: {message}") from None
        except UnicodeDecodeError as exc:
            # Raised by msgspec for a bad string; its offsets are within that string, so only the
            # string's start is shown.
            raise CodecError(
                NativeReason.MALFORMED_JSON,
                f"payload: not valid UTF-8 ({exc.reason} in a string starting {bytes(exc.object[:20])!r})",
            ) from None
        except RecursionError:
            raise CodecError(NativeReason.MALFORMED_JSON, "payload: JSON is nested too deeply") from None

        if isinstance(decoded, list):
            if not decoded:
                raise CodecError(NativeReason.EMPTY_BATCH, "payload: the batch array has no events")
            if len(decoded) > MAX_BATCH_EVENTS:
                raise CodecError(
                    NativeReason.BATCH_TOO_LARGE,
                    f"payload: batch of {len(decoded)} events, at most {MAX_BATCH_EVENTS} are allowed",
                )
            readings, batch = decoded, True
        else:
            readings, batch = [decoded], False

        topic_device = device_from_topic(topic)
        return [
            self._to_event(reading, f"[{index}]." if batch else "", topic_device, received_time_ms)
            for index, reading in enumerate(readings)
        ]

    def _to_event(
        self, reading: NativeReading, where: str, topic_device: str | None, received_time_ms: int
    ) -> Event:
        if topic_device is not None and reading.device_id != topic_device:
            raise CodecError(
                NativeReason.DEVICE_MISMATCH,
                f"{where}device_id: {reading.device_id!r} differs from the device {topic_device!r} in the "
                "topic",
            )
        event_time_ms = _event_time_ms(reading.time, where, received_time_ms)
        attributes = reading.attributes if reading.attributes is not None else {}
        event_id = reading.event_id
        if event_id is None:
            # The same reading delivered twice (QoS 1 redelivery, a device retrying) gets the same id,
            # so it is dropped downstream instead of being counted twice.
            canonical = msgspec.json.encode(attributes, order="sorted").decode()
            event_id = stable_id(reading.device_id, reading.kind, event_time_ms, canonical)
        location = reading.location
        return Event(
            event_id=event_id,
            device_id=reading.device_id,
            kind=reading.kind,
            event_time_ms=event_time_ms,
            ingest_time_ms=received_time_ms,
            attributes=attributes,
            location=None if location is None else Location(lat=location.lat, lon=location.lon),
            source=self.name,
        )

    def _validation_error(self, payload: bytes, exc: msgspec.ValidationError) -> CodecError:
        """Turn msgspec's "message - at `$.path`" into a reason and a detail that names the field."""
        match = _MESSAGE_AT.fullmatch(str(exc))
        message = match["message"] if match else str(exc)
        path = (match["path"] if match else None) or "$"
        names = _BACKTICKED.findall(message)
        if message.startswith("Object missing required field") and names:
            return CodecError(
                NativeReason.MISSING_FIELD, f"{_field_path(path, names[0])}: required field is missing"
            )
        if message.startswith("Object contains unknown field") and names:
            known = self._location_fields if path.endswith(".location") else self._reading_fields
            close = difflib.get_close_matches(names[0], known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(known)})"
            return CodecError(
                NativeReason.UNKNOWN_FIELD, f"{_field_path(path, names[0])}: unknown field{hint}"
            )
        rule, prefixes = _FIELD_RULES.get(path.rsplit(".", 1)[-1], ("", ()))
        # An empty prefix tuple matches nothing: other fields keep msgspec's wording.
        message = f"expected {rule}" if message.startswith(prefixes) else message[:1].lower() + message[1:]
        got = _value_at(payload, path)
        if got is not None:
            message += f" ({got})" if ", got `" in message else f", got {got}"
        return CodecError(NativeReason.INVALID_FIELD, f"{_field_path(path)}: {message}")


def device_from_topic(topic: str) -> str | None:
    """The device id in a native topic (the level after `events`), or None when the topic has none."""
    levels = topic.split("/")
    try:
        index = levels.index(DEVICE_LEVEL_AFTER)
    except ValueError:
        return None
    if index + 1 < len(levels) and levels[index + 1]:
        return levels[index + 1]
    return None


def _event_time_ms(value: int | datetime, where: str, received_time_ms: int) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise CodecError(
                NativeReason.INVALID_FIELD,
                f"{where}time: {value.isoformat()!r} has no UTC offset; add 'Z' or '+hh:mm'",
            )
        # Integer arithmetic, not timestamp(): a float would round some milliseconds the wrong way.
        time_ms = (value - _EPOCH) // _ONE_MS
        shown = repr(value.isoformat())
    else:
        time_ms = value
        shown = f"{value} ms"
    if time_ms < MIN_EVENT_TIME_MS:
        hint = ""
        if not isinstance(value, datetime) and MIN_EVENT_TIME_MS <= value * 1000 <= received_time_ms:
            hint = " (this looks like seconds; send milliseconds)"
        raise CodecError(NativeReason.IMPLAUSIBLE_TIME, f"{where}time: {shown} is before 2000-01-01{hint}")
    if time_ms > received_time_ms + MAX_FUTURE_MS:
        raise CodecError(
            NativeReason.IMPLAUSIBLE_TIME,
            f"{where}time: {shown} is more than a day ahead of the time it was received "
            f"({received_time_ms} ms)",
        )
    return time_ms


def _preview(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= _VALUE_PREVIEW_CHARS else shown[:_VALUE_PREVIEW_CHARS] + "..."


def _field_path(path: str, child: str | None = None) -> str:
    """`$[1].location` + `lat` -> `[1].location.lat`; the root alone is called `payload`."""
    rendered = path.removeprefix("$").removeprefix(".")
    if child is not None:
        rendered = f"{rendered}.{child}" if rendered else child
    return rendered or "payload"


def _value_at(payload: bytes, path: str) -> str | None:
    """A short repr of the value at a msgspec error path, to show what was sent; None if unknown.

    Only runs on the error path, so decoding the payload a second time (untyped) costs nothing that
    matters. Paths into dict values (`[...]`) do not say which key, so they give up.
    """
    if "[...]" in path:
        return None
    try:
        node: Any = msgspec.json.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    for key, index in _PATH_STEP.findall(path.removeprefix("$")):
        if key and isinstance(node, dict) and key in node:
            node = node[key]
        elif index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return None
    return _preview(node)
