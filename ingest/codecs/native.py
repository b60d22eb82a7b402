"""The native citywatch JSON format (docs/native-format.md): one event object or a batch array of them.

Decoding is one typed msgspec pass: the structs below are the format, so every structural error comes
back from msgspec with a JSON path that we turn into a field-named detail. Only the rules msgspec cannot
express (time zone present, time plausible, topic agrees with body) are checked afterwards in Python.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from core.models import Event, Location, stable_id
from ingest.codecs.base import CodecError
from ingest.codecs.explain import explain, malformed
from ingest.codecs.time_scale import scale_hint

MAX_BATCH_EVENTS = 1000
# 2000-01-01T00:00:00Z: anything older is a device with an unset clock (1970) or seconds sent as ms.
MIN_EVENT_TIME_MS = 946_684_800_000
# Device clocks drift, but a reading a day ahead of our clock is a wrong clock, not drift.
MAX_FUTURE_MS = 24 * 3600 * 1000
# Topic level after which the native topic carries the device id: citywatch/events/{device_id}.
DEVICE_LEVEL_AFTER = "events"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
# Field rules in words for error details, where the generated description (a regex, a type union)
# would not help the person who writes the payload. The rules themselves are the types below.
_FIELD_RULES: dict[str, str] = {
    "device_id": "1..128 characters of A-Z a-z 0-9 . _ : -",
    "kind": "1..64 characters of a-z 0-9 _ .",
    "event_id": "a string of 1..128 characters",
    "time": "integer epoch milliseconds or an RFC 3339 string like '2026-11-26T05:00:00.123Z'",
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
        except msgspec.ValidationError:
            raise explain(NativePayload, payload, _FIELD_RULES) from None
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise malformed(payload, exc) from None

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
            # so it is dropped downstream instead of being counted twice. One part joined here is the same
            # text, so the same id, as stable_id(device_id, kind, time, canonical), without its per-part
            # generator and str() calls on every event.
            canonical = msgspec.json.encode(attributes, order="sorted").decode()
            event_id = stable_id(f"{reading.device_id}\x1f{reading.kind}\x1f{event_time_ms}\x1f{canonical}")
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
    else:
        time_ms = value
    latest_ms = received_time_ms + MAX_FUTURE_MS
    if time_ms < MIN_EVENT_TIME_MS or time_ms > latest_ms:
        shown = repr(value.isoformat()) if isinstance(value, datetime) else f"{value} ms"
        # A number in another unit (seconds, nanoseconds) is named as such; a date-time has no unit.
        hint = "" if isinstance(value, datetime) else scale_hint(value, "milliseconds", MIN_EVENT_TIME_MS,
                                                                   latest_ms)
        problem = ("is before 2000-01-01" if time_ms < MIN_EVENT_TIME_MS else
                   f"is more than a day ahead of the time it was received ({received_time_ms} ms)")
        raise CodecError(NativeReason.IMPLAUSIBLE_TIME, f"{where}time: {shown} {problem}{hint}")
    return time_ms
