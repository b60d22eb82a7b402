"""The native citywatch JSON format (docs/native-format.md): one event object or a batch array of them.

Decoding is one typed msgspec pass: the structs below are the format, so every structural error comes
back from msgspec with a JSON path that we turn into a field-named detail. Only the rules msgspec cannot
express (time zone present, time plausible, topic agrees with body) are checked afterwards in Python.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from core.models import Event, Location, stable_text_id
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
DEVICE_ID_PATTERN = r"^[A-Za-z0-9._:-]+\Z"
KIND_PATTERN = r"^[a-z0-9_.]+\Z"
DeviceId = Annotated[str, Meta(min_length=1, max_length=128, pattern=DEVICE_ID_PATTERN)]
Kind = Annotated[str, Meta(min_length=1, max_length=64, pattern=KIND_PATTERN)]
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


class UncheckedReading(msgspec.Struct, forbid_unknown_fields=True):
    """NativeReading without the device_id and kind patterns, for the fast path of `decode`.

    msgspec checks a pattern by calling Python's `re` on every value, which was most of the time it took
    to decode a reading. The fast path checks the two patterns itself, once per distinct value, and
    hands every payload it does not accept to NativeReading, so what is refused, and why, does not change.
    tests/unit/test_native_codec.py holds the two structs to the same fields and limits.
    """

    device_id: Annotated[str, Meta(min_length=1, max_length=128)]
    kind: Annotated[str, Meta(min_length=1, max_length=64)]
    time: int | datetime
    event_id: EventId | None = None
    location: NativeLocation | None = None
    attributes: dict[str, Any] | None = None


_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
_KIND = re.compile(KIND_PATTERN)
# Device ids and kinds that passed their pattern; cleared when full, so memory stays bounded.
CHECKED_VALUES_LIMIT = 100_000
Reading = NativeReading | UncheckedReading
Decoded = NativeReading | UncheckedReading | list[NativeReading] | list[UncheckedReading]


class NativeCodec:
    """Decodes the native JSON format; see docs/native-format.md."""

    name = "native"

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(NativePayload)
        self._unchecked_decoder = msgspec.json.Decoder(UncheckedReading | list[UncheckedReading])
        self._checked_device_ids: set[str] = set()
        self._checked_kinds: set[str] = set()
        self._reading_fields = [field.encode_name for field in msgspec.structs.fields(NativeReading)]
        self._location_fields = [field.encode_name for field in msgspec.structs.fields(NativeLocation)]

    def decode(self, topic: str, payload: bytes, received_time_ms: int) -> list[Event]:
        decoded: Decoded | None = self._decode_fast(payload)
        if decoded is None:
            decoded = self._decode_checked(payload)
        return self._events(decoded, topic, received_time_ms)

    def _decode_fast(self, payload: bytes) -> Decoded | None:
        """The payload decoded when it is valid JSON of the format whose device ids and kinds match their
        patterns; None for anything else, which `_decode_checked` then decodes or refuses with the reason."""
        try:
            decoded = self._unchecked_decoder.decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # ValidationError included
            return None
        for reading in decoded if isinstance(decoded, list) else (decoded,):
            if not self._matches(reading.device_id, _DEVICE_ID, self._checked_device_ids):
                return None
            if not self._matches(reading.kind, _KIND, self._checked_kinds):
                return None
        return decoded

    @staticmethod
    def _matches(value: str, pattern: re.Pattern[str], checked: set[str]) -> bool:
        if value in checked:
            return True
        if pattern.search(value) is None:
            return False
        if len(checked) >= CHECKED_VALUES_LIMIT:
            checked.clear()
        checked.add(value)
        return True

    def _decode_checked(self, payload: bytes) -> Decoded:
        try:
            decoded: Decoded = self._decoder.decode(payload)
        except msgspec.ValidationError:
            raise explain(NativePayload, payload, _FIELD_RULES) from None
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise malformed(payload, exc) from None
        return decoded

    def _events(self, decoded: Decoded, topic: str, received_time_ms: int) -> list[Event]:
        if isinstance(decoded, list):
            if not decoded:
                raise CodecError(NativeReason.EMPTY_BATCH, "payload: the batch array has no events")
            if len(decoded) > MAX_BATCH_EVENTS:
                raise CodecError(
                    NativeReason.BATCH_TOO_LARGE,
                    f"payload: batch of {len(decoded)} events, at most {MAX_BATCH_EVENTS} are allowed",
                )
            readings: Sequence[Reading] = decoded
            batch = True
        else:
            readings, batch = [decoded], False

        topic_device = device_from_topic(topic)
        return [
            self._to_event(reading, f"[{index}]." if batch else "", topic_device, received_time_ms)
            for index, reading in enumerate(readings)
        ]

    def _to_event(
        self, reading: Reading, where: str, topic_device: str | None, received_time_ms: int
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
            # so it is dropped downstream instead of being counted twice. The parts joined here are the
            # same text, so the same id, as stable_id(device_id, kind, time, canonical), without its
            # per-part generator and str() calls on every event.
            canonical = msgspec.json.encode(attributes, order="sorted").decode()
            event_id = stable_text_id(
                f"{reading.device_id}\x1f{reading.kind}\x1f{event_time_ms}\x1f{canonical}")
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
