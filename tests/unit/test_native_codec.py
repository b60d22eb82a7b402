"""The native JSON codec: what it accepts, what it rejects, and that every rejection names the field."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from core.models import Event, Location, stable_id
from ingest.codecs import native
from ingest.codecs.base import CodecError
from ingest.codecs.native import (
    MAX_BATCH_EVENTS,
    MAX_FUTURE_MS,
    MIN_EVENT_TIME_MS,
    NativeCodec,
    NativeReading,
    UncheckedReading,
    device_from_topic,
)

RECEIVED_MS = 1_795_669_200_123  # 2026-11-26T05:00:00.123Z
EVENT_MS = RECEIVED_MS - 60_000
TOPIC = "citywatch/events/bin-0001"


def body(**overrides: Any) -> dict[str, Any]:
    reading: dict[str, Any] = {"device_id": "bin-0001", "kind": "bin", "time": EVENT_MS,
                               "attributes": {"fill_pct": 91.5}}
    reading.update(overrides)
    return {key: value for key, value in reading.items() if value is not ...}


def decode(payload: Any, topic: str = TOPIC) -> list[Event]:
    raw = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
    return NativeCodec().decode(topic, raw, RECEIVED_MS)


def rejection(payload: Any, topic: str = TOPIC) -> CodecError:
    with pytest.raises(CodecError) as caught:
        decode(payload, topic)
    return caught.value


# --- accepted -----------------------------------------------------------------------------------


def test_single_event_becomes_one_canonical_event() -> None:
    [event] = decode(body(location={"lat": 52.37, "lon": 4.89}, event_id="e-1"))
    assert event == Event(
        event_id="e-1", device_id="bin-0001", kind="bin", event_time_ms=EVENT_MS, ingest_time_ms=RECEIVED_MS,
        attributes={"fill_pct": 91.5}, location=Location(lat=52.37, lon=4.89), source="native",
    )


def test_batch_keeps_order_and_accepts_several_devices_on_a_topic_without_device() -> None:
    events = decode([body(), body(device_id="bin-0002", time=EVENT_MS + 1)], topic="citywatch/events")
    assert [(e.device_id, e.event_time_ms) for e in events] == [("bin-0001", EVENT_MS),
                                                               ("bin-0002", EVENT_MS + 1)]


def test_optional_fields_may_be_absent_or_null() -> None:
    [absent] = decode(body(attributes=...))
    [null] = decode(body(attributes=None, location=None, event_id=None))
    assert absent.attributes == {} and absent.location is None
    assert null.attributes == {} and null.location is None and null.event_id == absent.event_id


def test_attributes_keep_nested_values_of_any_json_type() -> None:
    attributes = {"n": 1, "x": 1.5, "s": "ok", "b": True, "none": None, "nested": {"list": [1, {"a": "b"}]}}
    [event] = decode(body(attributes=attributes))
    assert event.attributes == attributes


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [
        ("2026-11-26T05:00:00.123Z", 1_795_669_200_123),
        ("2026-11-26T06:00:00.123+01:00", 1_795_669_200_123),
        ("2026-11-26T00:30:00-04:30", 1_795_669_200_000),
        ("2026-11-26T05:00:00.1239Z", 1_795_669_200_123),  # sub-millisecond digits are cut, not rounded
    ],
)
def test_rfc3339_times_with_an_offset_become_epoch_ms(text: str, expected_ms: int) -> None:
    [event] = decode(body(time=text))
    assert event.event_time_ms == expected_ms


def test_attributes_are_kept_as_sent() -> None:
    attributes = {"fill_pct": 91, "temperature_c": -3.5, "battery_pct": None, "flow_veh_h": 1200,
                  "status": "ok", "meta": {"note_pct": "nested values are not checked"}}
    [event] = decode(body(attributes=attributes))
    assert event.attributes == attributes


def test_epoch_ms_time_is_taken_as_is() -> None:
    [event] = decode(body(time=RECEIVED_MS))
    assert event.event_time_ms == RECEIVED_MS


def test_time_limits_are_inclusive() -> None:
    assert decode(body(time=MIN_EVENT_TIME_MS))[0].event_time_ms == MIN_EVENT_TIME_MS
    assert decode(body(time=RECEIVED_MS + MAX_FUTURE_MS))[0].event_time_ms == RECEIVED_MS + MAX_FUTURE_MS


def test_device_id_and_kind_accept_their_full_alphabets() -> None:
    [event] = decode(body(device_id="A-z_0.9:x", kind="air.pm_25"), topic="citywatch/events")
    assert (event.device_id, event.kind) == ("A-z_0.9:x", "air.pm_25")


def test_batch_of_the_maximum_size_is_accepted() -> None:
    batch = [body(time=EVENT_MS - i) for i in range(MAX_BATCH_EVENTS)]
    assert len(decode(batch)) == MAX_BATCH_EVENTS


# --- derived ids --------------------------------------------------------------------------------


def test_derived_id_is_stable_for_the_same_reading_whatever_the_key_order_and_time_format() -> None:
    first = decode(b'{"device_id":"bin-0001","kind":"bin","time":1795669200123,'
                   b'"attributes":{"fill_pct":91.5,"battery":{"v":3.1,"pct":80}}}')
    again = decode(b'{"attributes":{"battery":{"pct":80,"v":3.1},"fill_pct":91.5},'
                   b'"time":"2026-11-26T05:00:00.123Z","kind":"bin","device_id":"bin-0001"}')
    assert first[0].event_id == again[0].event_id
    canonical = '{"battery":{"pct":80,"v":3.1},"fill_pct":91.5}'
    assert first[0].event_id == stable_id("bin-0001", "bin", 1_795_669_200_123, canonical)


@pytest.mark.parametrize(
    "change",
    [
        {"device_id": "bin-0002"},
        {"kind": "air"},
        {"time": EVENT_MS + 1},
        {"attributes": {"fill_pct": 91.6}},
        {"attributes": {"fill_pct": 91.5, "battery_pct": 80}},
    ],
)
def test_derived_id_differs_for_a_different_reading(change: dict[str, Any]) -> None:
    [base] = decode(body(), topic="citywatch/events")
    [other] = decode(body(**change), topic="citywatch/events")
    assert other.event_id != base.event_id


def test_given_event_id_is_kept() -> None:
    assert decode(body(event_id="reading-42"))[0].event_id == "reading-42"


# --- rejected -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason", "detail_part"),
    [
        (b"{not json", "malformed_json", "payload: not valid JSON"),
        (b"", "malformed_json", "payload: empty, expected JSON"),
        (b" \n", "malformed_json", "payload: empty, expected JSON"),
        (b'{"device_id": "bin-0001", "kind": ', "malformed_json", "payload: not valid JSON"),
        (msgspec.json.encode(body()) + b" trailing", "malformed_json", "payload: not valid JSON"),
        (b'{"device_id":"\xff\xfe","kind":"bin","time":1}', "malformed_json",
         "payload: not valid UTF-8 (byte 14, near "),
        (b'{"device_id":"bin-0001","kind":"bin","time":1795669140123,"attributes":{"a":'
         + b"[" * 5000 + b"]" * 5000 + b"}}", "malformed_json", "nested too deeply"),
        (b"42", "invalid_field", "payload: expected an object or an array, got 42"),
        (b'"text"', "invalid_field", "payload"),
        (b"[]", "empty_batch", "payload"),
    ],
)
def test_payload_level_rejections(payload: bytes, reason: str, detail_part: str) -> None:
    error = rejection(payload)
    assert (error.reason, detail_part in error.detail) == (reason, True), error.detail


@pytest.mark.parametrize(
    ("reading", "reason", "detail"),
    [
        (body(kind=...), "missing_field", "kind: required field is missing"),
        (body(time=...), "missing_field", "time: required field is missing"),
        (body(device_id=...), "missing_field", "device_id: required field is missing"),
        (body(location={"lat": 1.0}), "missing_field", "location.lon: required field is missing"),
        ({**body(), "atributes": {"fill_pct": 91.5}}, "unknown_field",
         "atributes: unknown field (did you mean 'attributes'?)"),
        (body(location={"lat": 1.0, "lng": 2.0}), "unknown_field",
         "location.lng: unknown field (did you mean 'lon'?)"),
        ({**body(), "zzz": 1}, "unknown_field", "zzz: unknown field (allowed: device_id, kind, time, "),
        (body(device_id="bin 0001"), "invalid_field",
         "device_id: expected 1..128 characters of A-Z a-z 0-9 . _ : -, got 'bin 0001'"),
        (body(device_id=""), "invalid_field", "device_id: expected 1..128 characters"),
        (body(device_id="b" * 129), "invalid_field", "device_id: expected 1..128 characters"),
        (body(device_id="bin-0001\n"), "invalid_field", "device_id: expected 1..128 characters"),
        (body(device_id=17), "invalid_field",
         "device_id: expected 1..128 characters of A-Z a-z 0-9 . _ : -, got 17"),
        (body(kind="Bin"), "invalid_field", "kind: expected 1..64 characters of a-z 0-9 _ ., got 'Bin'"),
        (body(kind="k" * 65), "invalid_field", "kind: expected 1..64 characters"),
        (body(event_id=""), "invalid_field", "event_id: expected a string of 1..128 characters, got ''"),
        (body(time=1.5e12), "invalid_field",
         "time: expected integer epoch milliseconds or an RFC 3339 string"),
        (body(time=True), "invalid_field", "time: expected integer epoch milliseconds"),
        (body(time="yesterday"), "invalid_field",
         "time: expected integer epoch milliseconds or an RFC 3339 string like '2026-11-26T05:00:00.123Z', "
         "got 'yesterday'"),
        (body(time="2026-11-26T05:00:00"), "invalid_field",
         "time: '2026-11-26T05:00:00' has no UTC offset; add 'Z' or '+hh:mm'"),
        (body(attributes=[1, 2]), "invalid_field", "attributes: expected an object or null, got [1, 2]"),
        (msgspec.json.encode(body(attributes={})).replace(b"{}", b'{"fill_pct":1e400}'), "invalid_field",
         "attributes.fill_pct: number 1e400 is out of range"),
        (body(location={"lat": 91, "lon": 0}), "invalid_field",
         "location.lat: expected a number between -90.0 and 90.0, got 91"),
        (body(location={"lat": 0, "lon": -181}), "invalid_field",
         "location.lon: expected a number between -180.0 and 180.0, got -181"),
        (body(location={"lat": "52.1", "lon": 4}), "invalid_field",
         "location.lat: expected a number between -90.0 and 90.0, got '52.1'"),
        (body(location=[52.1, 4.9]), "invalid_field",
         "location: expected an object or null, got [52.1, 4.9]"),
    ],
)
def test_field_rejections_name_the_field(reading: dict[str, Any] | bytes, reason: str, detail: str) -> None:
    error = rejection(reading, topic="citywatch/events")
    assert error.reason == reason
    assert error.detail.startswith(detail), error.detail


@pytest.mark.parametrize(
    ("time", "detail"),
    [
        (MIN_EVENT_TIME_MS - 1, "time: 946684799999 ms is before 2000-01-01"),
        (0, "time: 0 ms is before 2000-01-01"),
        (-5, "time: -5 ms is before 2000-01-01"),
        (RECEIVED_MS // 1000, "(this looks like seconds: 2026-11-26T05:00:00.000Z; send milliseconds)"),
        (RECEIVED_MS * 1_000_000, "(this looks like nanoseconds: 2026-11-26T05:00:00.123Z; send"),
        ("1999-12-31T23:59:59.999Z", "time: '1999-12-31T23:59:59.999000+00:00' is before 2000-01-01"),
        ("0001-01-01T00:00:00+05:00", "is before 2000-01-01"),
        (RECEIVED_MS + MAX_FUTURE_MS + 1, "is more than a day ahead of the time it was received"),
        ("9999-12-31T23:59:59-23:59", "is more than a day ahead"),
        (10**30, "is more than a day ahead"),
    ],
)
def test_implausible_times_are_rejected(time: Any, detail: str) -> None:
    error = rejection(body(time=time))
    assert error.reason == "implausible_time"
    assert detail in error.detail, error.detail


def test_device_in_topic_must_match_the_body() -> None:
    error = rejection(body(device_id="bin-0002"), topic="citywatch/events/bin-0001")
    assert error.reason == "device_mismatch"
    assert error.detail == "device_id: 'bin-0002' differs from the device 'bin-0001' in the topic"


def test_batch_errors_name_the_event_index() -> None:
    error = rejection([body(), body(location={"lat": 100, "lon": 0})])
    assert error.detail.startswith("[1].location.lat: expected a number between -90.0 and 90.0, got 100")
    error = rejection([body(), {**body(), "colour": "red"}])
    assert (error.reason, error.detail.split(":")[0]) == ("unknown_field", "[1].colour")
    error = rejection([body(), body(), body(device_id="bin-9")])
    assert (error.reason, error.detail.split(":")[0]) == ("device_mismatch", "[2].device_id")
    error = rejection([body(), body(time=5)])
    assert (error.reason, error.detail.split(":")[0]) == ("implausible_time", "[1].time")


def test_one_bad_event_rejects_the_whole_batch() -> None:
    # A message is accepted or dead-lettered as a whole, so replaying the fixed payload is the fix.
    rejection([body(), body(kind="BAD")])


def test_batch_over_the_limit_is_rejected_before_looking_at_events() -> None:
    error = rejection([body()] * (MAX_BATCH_EVENTS + 1))
    assert error.reason == "batch_too_large"
    assert error.detail == (
        f"payload: batch of {MAX_BATCH_EVENTS + 1} events, at most {MAX_BATCH_EVENTS} are allowed"
    )


def test_codec_error_carries_reason_and_detail_as_plain_strings() -> None:
    error = rejection(b"[]")
    assert type(error.reason) is str
    assert str(error) == f"{error.reason}: {error.detail}"


@pytest.mark.parametrize(
    ("topic", "device"),
    [
        ("citywatch/events/bin-0001", "bin-0001"),
        ("citywatch/events/bin-0001/extra", "bin-0001"),
        ("city/north/events/air-7", "air-7"),
        ("citywatch/events", None),
        ("citywatch/events/", None),
        ("vendor/uplink", None),
    ],
)
def test_device_from_topic(topic: str, device: str | None) -> None:
    assert device_from_topic(topic) == device


# --- the fast path: patterns checked once per value -----------------------------------------------


def test_the_fast_path_struct_is_the_format_without_its_two_patterns() -> None:
    def limits(struct: type[msgspec.Struct]) -> list[tuple[Any, ...]]:
        rows = []
        for field in msgspec.structs.fields(struct):
            annotation = field.type
            metas = [m for m in getattr(annotation, "__metadata__", ()) if isinstance(m, msgspec.Meta)]
            shown = [(m.min_length, m.max_length, m.ge, m.le) for m in metas]
            rows.append((field.name, annotation.__origin__ if metas else annotation, field.default, shown))
        return rows

    assert limits(UncheckedReading) == limits(NativeReading)
    assert UncheckedReading.__struct_config__.forbid_unknown_fields


def test_a_device_id_or_kind_against_its_pattern_is_refused_however_often_valid_ones_came_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "CHECKED_VALUES_LIMIT", 3)  # the remembered values are forgotten often
    codec = NativeCodec()
    for n in range(10):
        device = f"bin-{n % 5:04d}"
        [event] = codec.decode(f"citywatch/events/{device}", msgspec.json.encode(body(device_id=device)),
                               RECEIVED_MS)
        assert event.device_id == device
        for bad in (body(device_id="bin-0001\n"), body(kind="Bin"), [body(), body(device_id="bin 1")]):
            with pytest.raises(CodecError) as caught:
                codec.decode("citywatch/events", msgspec.json.encode(bad), RECEIVED_MS)
            assert caught.value.reason == "invalid_field"
            assert caught.value.detail.startswith(("device_id: expected", "kind: expected",
                                                   "[1].device_id: expected")), caught.value.detail
