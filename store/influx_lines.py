"""Line protocol for citywatch's measurements (the design is in docs/store-influxdb.md).

InfluxDB identifies a point by measurement, tag set and timestamp, and a second write of the same point
merges its fields into the first (new values win, fields not written stay). Every timestamp here is the
event time in ms plus a sub-millisecond offset derived from the record's id, so:
- the same event, violation or dead letter written twice lands on the same point (a replay overwrites);
- two records of one series in the same millisecond (two cars parked at one camera) stay apart.
Violations use the field merge for their status: the clear writes `end_time_ms` and `cleared_*` fields that
an open never writes, so a replayed open cannot reopen a cleared violation, whatever the order.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec

from core.models import DeadLetter, Event, LifecycleEntry, Prediction, Violation, ViolationStatus, rule_change

READINGS: Final = "readings"
VIOLATIONS: Final = "violations"
DEAD_LETTERS: Final = "dead_letters"
PREDICTIONS: Final = "predictions"
VIOLATION_HISTORY: Final = "violation_history"
READINGS_HOURLY: Final = "readings_hourly"

# Tags: bounded value sets only (never plates, track ids, event ids).
READING_TAGS: Final = ("grid", "district", "department")
VIOLATION_TAGS: Final = ("grid", "district", "department", "intersection")

# Fields of a reading that are not attributes; an attribute with one of these names is kept only inside
# `attributes_json`.
READING_META_FIELDS: Final = frozenset(
    {"event_id", "ingest_time_ms", "source", "attributes_json", "tags_json", "lat", "lon"}
)

_NS_PER_MS: Final = 1_000_000
_encode_json = msgspec.json.Encoder().encode


def offset_ns(record_id: str) -> int:
    """A stable offset in [0, 1 ms) for a record id."""
    digest = hashlib.blake2b(record_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _NS_PER_MS


def point_time_ns(time_ms: int, record_id: str) -> int:
    return time_ms * _NS_PER_MS + offset_ns(record_id)


# Tag keys, tag values and field names come from bounded sets (that is what makes them tags), so their
# escaped forms are cached: escaping was the costliest step of building a line.
@functools.lru_cache(maxsize=65536)
def _escape_key(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


@functools.lru_cache(maxsize=65536)
def _escape_tag_value(value: str) -> str:
    # A trailing backslash would escape the separator after it; newlines end a line.
    value = value.replace("\n", " ").rstrip("\\")
    return _escape_key(value)


def string_field(value: str) -> str:
    # A newline inside the quotes is part of the string (InfluxDB 1.x has no escape for it).
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tags(pairs: Iterable[tuple[str, str | None]]) -> str:
    return "".join(f",{_escape_key(k)}={_escape_tag_value(v)}" for k, v in sorted(pairs) if v)


def _float(value: float) -> str | None:
    return repr(float(value)) if math.isfinite(value) else None


def numeric_attributes(attributes: dict[str, Any]) -> dict[str, float]:
    """The attributes stored as their own float fields (booleans and non-finite values are not)."""
    return {
        name: float(value)
        for name, value in attributes.items()
        if isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and name not in READING_META_FIELDS
    }


def event_line(event: Event) -> bytes:
    tags = _tags(
        [
            ("device", event.device_id),
            ("kind", event.kind),
            *((name, event.tags.get(name)) for name in READING_TAGS),
        ]
    )
    fields = [
        f"event_id={string_field(event.event_id)}",
        f"ingest_time_ms={event.ingest_time_ms}i",
        f"source={string_field(event.source)}",
        f"attributes_json={string_field(_encode_json(event.attributes).decode())}",
        f"tags_json={string_field(_encode_json(event.tags).decode())}",
    ]
    if event.location is not None:
        fields += [f"lat={_float(event.location.lat)}", f"lon={_float(event.location.lon)}"]
    fields += [
        f"{_escape_key(name)}={value!r}" for name, value in numeric_attributes(event.attributes).items()
    ]
    return (
        f"{READINGS}{tags} {','.join(fields)} {point_time_ns(event.event_time_ms, event.event_id)}".encode()
    )


def violation_line(violation: Violation, time_ns: int | None = None) -> bytes:
    key = _series_key(
        VIOLATIONS,
        (
            ("type", violation.type),
            ("device", violation.device_id),
            ("severity", violation.severity.value),
            *((name, violation.tags.get(name)) for name in VIOLATION_TAGS),
        ),
    )
    fields = [
        f"violation_id={string_field(violation.violation_id)}",
        f"start_time_ms={violation.start_time_ms}i",
        f"tags_json={string_field(_encode_json(violation.tags).decode())}",
    ]
    if violation.location is not None:
        fields += [f"lat={_float(violation.location.lat)}", f"lon={_float(violation.location.lon)}"]
    evidence = string_field(_encode_json(violation.evidence).decode())
    if violation.status is ViolationStatus.CLEARED:
        end_time_ms = (
            violation.end_time_ms if violation.end_time_ms is not None else violation.updated_time_ms
        )
        fields += [
            f"end_time_ms={end_time_ms}i",
            f"cleared_evidence={evidence}",
            f"cleared_updated_ms={violation.updated_time_ms}i",
        ]
    else:
        fields += [f"open_evidence={evidence}", f"open_updated_ms={violation.updated_time_ms}i"]
    if violation.detected_time_ms is not None:
        fields.append(f"detected_time_ms={violation.detected_time_ms}i")
    if time_ns is None:
        time_ns = point_time_ns(violation.start_time_ms, violation.violation_id)
    return f"{key} {','.join(fields)} {time_ns}".encode()


def rule_change_line(entry: LifecycleEntry) -> bytes:
    """A rule's state change of a violation (core.models.rule_change). The point's key is (change, event
    time + the violation id's offset): a replay overwrites it with the same values, never adds one. The id
    is a field, not a tag, for the same reason as in `violations` (one series per violation would not
    scale)."""
    key = _series_key(VIOLATION_HISTORY, (("change", entry.change.value),))
    time_ns = point_time_ns(entry.time_ms, entry.violation_id)
    return (
        f"{key} violation_id={string_field(entry.violation_id)},actor={string_field(entry.actor)},"
        f"time_ms={entry.time_ms}i {time_ns}"
    ).encode()


# A narrow copy of each violation for counting the hours not rolled up yet (store/influx_counts.py): InfluxDB
# 1.x aggregates slowly over many short series, and `violations` has one series per (type, device, severity,
# area). The copy keeps the violation's timestamp (start time + id offset), so a replay overwrites it like the
# main point: counts stay idempotent. A count reads it when it has every tag the count groups or filters by.
# (Versions before the rollups also wrote `violation_counts_intersection`, `_device`, `_grid` and
# `_device_type`; they are no longer written or read.)
COUNT_MEASUREMENTS: Final = (("violation_counts_type", ("type", "district", "department")),)


def violation_count_lines(violation: Violation) -> list[bytes]:
    values = {
        "type": violation.type,
        "device": violation.device_id,
        **{name: violation.tags.get(name) for name in VIOLATION_TAGS},
    }
    time_ns = point_time_ns(violation.start_time_ms, violation.violation_id)
    return [
        f"{name}{_tags((tag, values[tag]) for tag in tags)} n=1i {time_ns}".encode()
        for name, tags in COUNT_MEASUREMENTS
    ]


# -- whole batches: the write path ------------------------------------------------------------------------
# The same lines as the one-record functions above, built for a batch at a time: a series' key (measurement
# and escaped, sorted tags) is the same for every record of a device, so it is built once and cached, and
# everything else of a line is one f-string. This is most of the Python time a write spends.


@functools.lru_cache(maxsize=65536)
def _series_key(measurement: str, pairs: tuple[tuple[str, str | None], ...]) -> str:
    return measurement + _tags(pairs)


@functools.lru_cache(maxsize=4096)
def _float_field_prefix(name: str) -> str:
    return f",{_escape_key(name)}="


def _numeric_fields(attributes: dict[str, Any]) -> str:
    out = ""
    for name, value in attributes.items():
        kind = type(value)
        if (kind is float or kind is int) and name not in READING_META_FIELDS:
            if kind is float and not math.isfinite(value):
                continue
            out += f"{_float_field_prefix(name)}{float(value)!r}"
        elif isinstance(value, int | float) and not isinstance(value, bool):
            # Subclasses of int and float (rare: enums, numpy scalars) take the one-record path's rules.
            number = float(value)
            if math.isfinite(number) and name not in READING_META_FIELDS:
                out += f"{_float_field_prefix(name)}{number!r}"
    return out


def event_lines(events: Sequence[Event]) -> list[bytes]:
    """`event_line` of each event."""
    out: list[bytes] = []
    append = out.append
    for event in events:
        tags = event.tags
        key = _series_key(
            READINGS,
            (
                ("device", event.device_id),
                ("kind", event.kind),
                ("grid", tags.get("grid")),
                ("district", tags.get("district")),
                ("department", tags.get("department")),
            ),
        )
        location = event.location
        where = "" if location is None else f",lat={_float(location.lat)},lon={_float(location.lon)}"
        append(
            f"{key} event_id={string_field(event.event_id)},ingest_time_ms={event.ingest_time_ms}i,"
            f"source={string_field(event.source)},"
            f"attributes_json={string_field(_encode_json(event.attributes).decode())},"
            f"tags_json={string_field(_encode_json(tags).decode())}{where}"
            f"{_numeric_fields(event.attributes)} {point_time_ns(event.event_time_ms, event.event_id)}"
            .encode()
        )
    return out


@functools.lru_cache(maxsize=65536)
def _count_keys(type_: str, device: str, area: tuple[str | None, ...]) -> tuple[str, ...]:
    """The series keys of a violation's copies in every COUNT_MEASUREMENTS, in that order."""
    values = {"type": type_, "device": device, **dict(zip(VIOLATION_TAGS, area, strict=True))}
    return tuple(name + _tags((tag, values[tag]) for tag in tags) for name, tags in COUNT_MEASUREMENTS)


def violation_lines(violations: Sequence[Violation]) -> list[bytes]:
    """Everything a batch of violation states writes: each state's `violation_line`, its
    `violation_count_lines` and the `rule_change_line` of its change."""
    out: list[bytes] = []
    append = out.append
    for violation in violations:
        tags = violation.tags
        area = tuple(tags.get(name) for name in VIOLATION_TAGS)
        time_ns = point_time_ns(violation.start_time_ms, violation.violation_id)
        append(violation_line(violation, time_ns))
        for key in _count_keys(violation.type, violation.device_id, area):
            append(f"{key} n=1i {time_ns}".encode())
        append(rule_change_line(rule_change(violation)))
    return out


def dead_letter_line(letter: DeadLetter) -> bytes:
    """The point's identity (measurement, `reason` tag, time) holds the letter's id in its sub-millisecond
    offset, so writing the same dead letter again (a Kafka replay) overwrites it instead of adding one."""
    fields = [
        f"detail={string_field(letter.detail)}",
        f"topic={string_field(letter.topic)}",
        f"payload_b64={string_field(base64.b64encode(letter.payload).decode())}",
        f"source={string_field(letter.source)}",
        f"dead_letter_id={string_field(letter.dead_letter_id)}",
    ]
    time_ns = point_time_ns(letter.received_time_ms, letter.dead_letter_id)
    return f"{DEAD_LETTERS}{_tags([('reason', letter.reason)])} {','.join(fields)} {time_ns}".encode()


# A forecast with no predicted time (no rising trend) still writes the field, so that the newest point
# never shows an older forecast's time through InfluxDB's field merge.
NO_PREDICTED_TIME: Final = -1


def prediction_line(prediction: Prediction) -> bytes:
    """One point per forecast at its computed (event) time; the newest point of a (type, device) series
    is the current forecast, so a forecast from older readings never hides a newer one."""
    predicted = prediction.predicted_time_ms
    fields = [
        f"computed_time_ms={prediction.computed_time_ms}i",
        f"predicted_time_ms={NO_PREDICTED_TIME if predicted is None else predicted}i",
        f"value={_float(prediction.value) or 0.0}",
        f"details_json={string_field(_encode_json(prediction.details).decode())}",
        f"tags_json={string_field(_encode_json(prediction.tags).decode())}",
    ]
    if prediction.location is not None:
        fields += [f"lat={_float(prediction.location.lat)}", f"lon={_float(prediction.location.lon)}"]
    tags = _tags([("type", prediction.type), ("device", prediction.device_id)])
    return f"{PREDICTIONS}{tags} {','.join(fields)} {prediction.computed_time_ms * _NS_PER_MS}".encode()


def rollup_line(hour_ms: int, tags: dict[str, str], stats: dict[str, float | int]) -> bytes:
    fields = ",".join(
        f"{_escape_key(name)}={value}i" if isinstance(value, int) else f"{_escape_key(name)}={value!r}"
        for name, value in sorted(stats.items())
    )
    return f"{READINGS_HOURLY}{_tags(tags.items())} {fields} {hour_ms * _NS_PER_MS}".encode()
