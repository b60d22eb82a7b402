"""Properties of the native codec: nothing but CodecError escapes, and valid input round-trips exactly."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.models import Event, Location
from ingest.attributes import NUMERIC_UNIT_SUFFIXES, attribute_error
from ingest.codecs.base import CodecError
from ingest.codecs.native import MAX_FUTURE_MS, MIN_EVENT_TIME_MS, NativeCodec, NativeReason

RECEIVED_MS = 1_795_669_200_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# No per-example deadline: a loaded CI machine must not turn a slow example into a failure.
PROPS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON numbers citywatch accepts: signed 64-bit integers and finite floats.
numbers = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
)
json_scalars = st.none() | st.booleans() | numbers | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Free-form attribute names must not end in a unit suffix: those are measurements, drawn separately.
free_names = st.text(max_size=12).filter(lambda name: not name.endswith(NUMERIC_UNIT_SUFFIXES))
unit_names = st.builds(lambda stem, unit: stem + unit, st.from_regex(r"\A[a-z0-9]{1,8}\Z"),
                       st.sampled_from(NUMERIC_UNIT_SUFFIXES))
device_ids = st.from_regex(r"\A[A-Za-z0-9._:-]{1,128}\Z")
kinds = st.from_regex(r"\A[a-z0-9_.]{1,64}\Z")
event_times_ms = st.integers(min_value=MIN_EVENT_TIME_MS, max_value=RECEIVED_MS + MAX_FUTURE_MS)
# RFC 3339 offsets are whole minutes, up to +-23:59.
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@st.composite
def times(draw: st.DrawFn) -> tuple[int | str, int]:
    """A `time` field value (epoch ms or RFC 3339 text) and the epoch ms it must decode to."""
    time_ms = draw(event_times_ms)
    if draw(st.booleans()):
        return time_ms, time_ms
    # Sub-millisecond digits are allowed and cut off, so they must not change the expected value.
    micros = draw(st.integers(min_value=0, max_value=999))
    moment = (EPOCH + timedelta(milliseconds=time_ms, microseconds=micros)).astimezone(draw(offsets))
    text = moment.isoformat()
    if text.endswith("+00:00") and draw(st.booleans()):
        text = text.removesuffix("+00:00") + "Z"
    return text, time_ms


@st.composite
def readings(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    """A valid native reading (optional fields present or not) and its expected event time."""
    time_value, time_ms = draw(times())
    reading: dict[str, Any] = {"device_id": draw(device_ids), "kind": draw(kinds), "time": time_value}
    if draw(st.booleans()):
        reading["event_id"] = draw(st.text(min_size=1, max_size=128))
    if draw(st.booleans()):
        reading["location"] = {
            "lat": draw(st.floats(min_value=-90, max_value=90)),
            "lon": draw(st.floats(min_value=-180, max_value=180)),
        }
    if draw(st.booleans()):
        attributes = draw(st.dictionaries(free_names, json_values, max_size=6))
        attributes |= draw(st.dictionaries(unit_names, numbers | st.none(), max_size=3))
        reading["attributes"] = attributes
    return reading, time_ms


def decode(topic: str, payload: bytes) -> list[Event] | CodecError:
    """Decode, turning CodecError into a value: any other exception fails the property."""
    try:
        return NativeCodec().decode(topic, payload, RECEIVED_MS)
    except CodecError as error:
        assert error.reason in set(NativeReason), error.reason
        # The schema walk names the place of every refusal; its fallback would mean a struct type it
        # does not know.
        assert error.detail != "payload: does not match the format"
        return error


def expected_event_matches(event: Event, reading: dict[str, Any], time_ms: int) -> None:
    assert event.device_id == reading["device_id"]
    assert event.kind == reading["kind"]
    assert event.event_time_ms == time_ms
    assert event.ingest_time_ms == RECEIVED_MS
    assert event.attributes == reading.get("attributes", {})
    location = reading.get("location")
    assert event.location == (None if location is None else Location(**location))
    if "event_id" in reading:
        assert event.event_id == reading["event_id"]
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", event.event_id)
    assert (event.source, event.tags) == ("native", {})


@PROPS
@given(st.binary(max_size=512))
def test_random_bytes_only_ever_raise_codec_error(payload: bytes) -> None:
    decode("citywatch/events", payload)


@PROPS
@given(st.lists(readings(), min_size=1, max_size=5), st.data())
def test_mutated_valid_payloads_only_ever_raise_codec_error(batch: list[tuple[dict[str, Any], int]],
                                                            data: st.DataObject) -> None:
    payload = bytearray(msgspec.json.encode([reading for reading, _ in batch]))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        position = data.draw(st.integers(min_value=0, max_value=len(payload)))
        action = data.draw(st.sampled_from(["delete", "insert", "replace", "truncate"]))
        if action == "delete":
            del payload[position:position + data.draw(st.integers(min_value=1, max_value=8))]
        elif action == "insert":
            payload[position:position] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "replace" and position < len(payload):
            payload[position] = data.draw(st.integers(min_value=0, max_value=255))
        elif action == "truncate":
            del payload[position:]
    decode("citywatch/events", bytes(payload))


@PROPS
@given(readings(), st.sampled_from(["device_id", "kind", "time", "event_id", "location", "attributes",
                                    "extra"]), json_values)
def test_any_json_value_in_any_field_only_ever_raises_codec_error(
    valid: tuple[dict[str, Any], int], field: str, value: Any
) -> None:
    reading, _ = valid
    reading[field] = value
    decode("citywatch/events", msgspec.json.encode(reading))


@PROPS
@given(readings(), unit_names, json_values.filter(lambda value: isinstance(value, str | bool | list | dict)))
def test_a_unit_suffixed_attribute_that_is_not_a_number_is_named_by_the_attribute_check(
    valid: tuple[dict[str, Any], int], name: str, value: Any
) -> None:
    reading, _ = valid
    reading["attributes"] = {**reading.get("attributes", {}), name: value}
    [event] = decode("citywatch/events", msgspec.json.encode(reading))
    error = attribute_error(event.attributes)
    assert error is not None and error.startswith(f"attributes.{name}: expected a number")


@PROPS
@given(readings())
def test_valid_single_event_decodes_to_exactly_the_input(valid: tuple[dict[str, Any], int]) -> None:
    reading, time_ms = valid
    result = decode(f"citywatch/events/{reading['device_id']}", msgspec.json.encode(reading))
    assert isinstance(result, list), result
    [event] = result
    expected_event_matches(event, reading, time_ms)


@PROPS
@given(st.lists(readings(), min_size=1, max_size=20))
def test_valid_batch_decodes_to_exactly_the_input_in_order(batch: list[tuple[dict[str, Any], int]]) -> None:
    result = decode("citywatch/events", msgspec.json.encode([reading for reading, _ in batch]))
    assert isinstance(result, list), result
    assert len(result) == len(batch)
    for event, (reading, time_ms) in zip(result, batch, strict=True):
        expected_event_matches(event, reading, time_ms)


@PROPS
@given(readings())
def test_derived_id_ignores_key_order(valid: tuple[dict[str, Any], int]) -> None:
    reading, _ = valid
    reading.pop("event_id", None)

    def reversed_keys(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: reversed_keys(value[key]) for key in reversed(list(value))}
        if isinstance(value, list):
            return [reversed_keys(item) for item in value]
        return value

    first = decode("citywatch/events", msgspec.json.encode(reading))
    second = decode("citywatch/events", msgspec.json.encode(reversed_keys(reading)))
    assert isinstance(first, list) and isinstance(second, list)
    assert first[0].event_id == second[0].event_id
