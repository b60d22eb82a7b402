"""Properties of every vendor codec: random and mutated payloads raise nothing but CodecError, and valid
messages (generated, with extra keys a newer release might add) are never dropped."""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.models import Event
from ingest.codecs.base import CodecError
from ingest.codecs.senml import SHIPPED_NAMES, UNITS
from tests.support.formats import RECEIVED_MS, SCHEMAS, TOPICS, codec_for, fixtures

PROPS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=150)
CODECS = {name: codec_for(name) for name in TOPICS}
VALID = {
    name: [json.loads(path.read_text()) for group in ("valid", "edge") for path in fixtures(name, group)]
    for name in ("frigate", "tts", "chirpstack", "senml")
}
for kind in ("signal", "detector", "camera_violation"):
    VALID[kind] = [json.loads((SCHEMAS / "examples" / f"{kind}.json").read_text())]

# JSON integers beyond 64 bits decode to Python ints too large for a float: they must be refused, not crash.
numbers = (
    st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([10**400, -(10**400), 2**1024])
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
names = st.sampled_from(sorted(TOPICS))


def decode_or_codec_error(name: str, payload: bytes) -> list[Event] | None:
    try:
        # No device level in the topic, so a mutation reaches the body's checks, not the topic comparison.
        topic = TOPICS[name] if "{device}" not in TOPICS[name] else f"test/{name}"
        events = CODECS[name].decode(topic, payload, RECEIVED_MS)
    except CodecError as error:
        assert error.reason and error.detail, error
        return None
    for event in events:
        msgspec.json.encode(event)  # a well-formed event the bus and the store can carry
    return events


@PROPS
@given(name=names, payload=st.binary(max_size=300))
def test_random_bytes_raise_nothing_but_codec_error(name: str, payload: bytes) -> None:
    decode_or_codec_error(name, payload)


@PROPS
@given(name=names, value=json_values)
def test_random_json_raises_nothing_but_codec_error(name: str, value: Any) -> None:
    decode_or_codec_error(name, json.dumps(value).encode())


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(names)
    message = copy.deepcopy(draw(st.sampled_from(VALID[name])))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = [p for p in _paths(message) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = message
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["delete", "replace", "insert"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(json_values)
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(json_values)
    return name, json.dumps(message).encode()


@PROPS
@given(case=mutated())
def test_mutated_valid_messages_raise_nothing_but_codec_error(case: tuple[str, bytes]) -> None:
    decode_or_codec_error(*case)


# --- nothing valid is dropped ---------------------------------------------------------------------

plain_names = st.from_regex(r"\A[a-z][a-z0-9_-]{0,20}\Z")
times_s = st.floats(min_value=1_700_000_000, max_value=RECEIVED_MS / 1000, allow_nan=False)
unknown_keys = st.dictionaries(st.from_regex(r"\Azz_[a-z]{1,8}\Z"), json_values, max_size=3)


@PROPS
@given(
    camera=plain_names,
    track=plain_names,
    stage=st.sampled_from(["new", "update", "end"]),
    frame_time=times_s,
    label=st.sampled_from(["car", "truck", "bus", "person", "bicycle"]),
    score=st.floats(0, 1),
    zones=st.lists(plain_names, max_size=4),
    box=st.tuples(*[st.integers(0, 1000)] * 4),
    speed=st.none() | st.floats(0, 200),
    plate=st.none() | st.sampled_from(["粤B12345", ["粤B6K8Q2", 0.9]]),
    extra=unknown_keys,
)
def test_frigate_keeps_every_valid_track_message(
    camera: str,
    track: str,
    stage: str,
    frame_time: float,
    label: str,
    score: float,
    zones: list[str],
    box: tuple[int, int, int, int],
    speed: float | None,
    plate: Any,
    extra: dict[str, Any],
) -> None:
    x1, x2 = sorted(box[::2])
    y1, y2 = sorted(box[1::2])
    after = {
        "id": track,
        "camera": camera,
        "frame_time": frame_time,
        "label": label,
        "score": score,
        "current_zones": zones,
        "entered_zones": zones,
        "box": [x1, y1, x2, y2],
        "current_estimated_speed": speed,
        "recognized_license_plate": plate,
        **extra,
    }
    [event] = CODECS["frigate"].decode(
        "frigate/events", json.dumps({"type": stage, "after": after}).encode(), RECEIVED_MS
    )
    assert event.device_id == camera and event.attributes["track_id"] == track
    assert event.attributes["zones"] == zones and event.event_time_ms == round(frame_time * 1000)
    assert ("plate" in event.attributes) == (plate is not None)
    assert ("speed_kmh" in event.attributes) == (speed is not None)


@PROPS
@given(
    distance=st.integers(0, 20000),
    battery=st.integers(0, 100),
    position=st.sampled_from(["normal", "tilt"]),
    f_cnt=st.integers(0, 2**32 - 1),
    extra=unknown_keys,
    chirpstack=st.booleans(),
)
def test_lorawan_keeps_every_valid_milesight_uplink(
    distance: int, battery: int, position: str, f_cnt: int, extra: dict[str, Any], chirpstack: bool
) -> None:
    decoded = {"distance": distance, "battery": battery, "position": position}
    if chirpstack:
        message: dict[str, Any] = {
            "deduplicationId": f"dedup-{f_cnt}",
            "time": "2026-11-26T05:00:01Z",
            "fCnt": f_cnt,
            "fPort": 85,
            "deviceInfo": {"deviceName": "em310-bin-0042", "devEui": "24E124713C123456"},
            "object": decoded,
            **extra,
        }
    else:
        message = {
            "end_device_ids": {"device_id": "em310-bin-0042"},
            **extra,
            "uplink_message": {
                "f_port": 85,
                "f_cnt": f_cnt,
                "received_at": "2026-11-26T05:00:01Z",
                "decoded_payload": decoded,
            },
        }
    [event] = CODECS["chirpstack" if chirpstack else "tts"].decode(
        "t", json.dumps(message).encode(), RECEIVED_MS
    )
    assert event.attributes["distance_mm"] == distance and event.attributes["battery_pct"] == battery
    assert event.attributes["tilted"] is (position == "tilt") and event.attributes["f_cnt"] == f_cnt


@PROPS
@given(
    records=st.lists(
        st.tuples(
            # Names the name map knows are left out: two of them may mean one measurement.
            st.from_regex(r"\A[a-z][a-z0-9]{0,10}\Z").filter(lambda name: name not in SHIPPED_NAMES),
            st.sampled_from(sorted(UNITS)),
            st.floats(-1e6, 1e6),
            st.sampled_from([0, -10, -20]),
        ),
        min_size=1,
        max_size=12,
        unique_by=lambda r: (r[0], r[3]),
    ),
)
def test_senml_keeps_every_record_of_a_valid_pack(records: list[tuple[str, str, float, int]]) -> None:
    pack: list[dict[str, Any]] = [
        {"n": name, "u": unit, "v": value, "t": offset} for name, unit, value, offset in records
    ]
    pack[0].update({"bn": "dev-1:", "bt": RECEIVED_MS / 1000})
    events = CODECS["senml"].decode("senml/x", json.dumps(pack).encode(), RECEIVED_MS)
    assert sorted(e.event_time_ms for e in events) == sorted({RECEIVED_MS + r[3] * 1000 for r in records})
    assert sum(len(e.attributes) for e in events) == len(records)
    assert all(e.device_id == "dev-1" for e in events)


@PROPS
@given(
    device=st.sampled_from(["urn:dev:ow:10e2073a01080063", "urn:dev:mac:0024befffe804ff1", "bin-0101"]),
    records=st.lists(
        st.tuples(
            st.sampled_from(["temperature", "humidity", "pm2_5", "fill", "label", "voltage"]),
            st.sampled_from(["Cel", "%RH", "ug/m3", "%", "V", None]),
            st.integers(0, 1000) | st.text(min_size=1, max_size=6),
            st.sampled_from([0, -60, -120]),
        ),
        min_size=1,
        max_size=10,
        unique_by=lambda r: (r[0], r[3]),
    ),
)
def test_senml_resolved_records_mean_what_their_pack_means(
    device: str, records: list[tuple[str, str | None, int | str, int]]
) -> None:
    """RFC 8428 section 4.6: resolving a pack (full names, absolute times, units on every record) changes
    nothing it says, for a registered device id and for device URNs."""
    base_time = RECEIVED_MS / 1000
    pack: list[dict[str, Any]] = [{"bn": f"{device}:", "bt": base_time}]
    resolved: list[dict[str, Any]] = []
    for name, unit, value, offset in records:
        record: dict[str, Any] = {"n": name, "t": offset, "v" if isinstance(value, int) else "vs": value}
        if unit is not None:
            record["u"] = unit
        pack.append(record)
        resolved.append({**record, "n": f"{device}:{name}", "t": base_time + offset})
    resolved.sort(key=lambda record: record["t"])
    compact = decode_or_codec_error("senml", json.dumps(pack).encode())
    full = decode_or_codec_error("senml", json.dumps(resolved).encode())

    def meaning(events: list[Event] | None) -> list[tuple[str, int, dict[str, Any]]] | None:
        return None if events is None else sorted(
            (e.device_id, e.event_time_ms, e.attributes) for e in events
        )

    assert compact is not None
    assert meaning(full) == meaning(compact) and {e.device_id for e in compact} == {device}


@PROPS
@given(
    phases=st.lists(
        st.tuples(plain_names, st.sampled_from(["red", "amber", "green", "off"])), min_size=1, max_size=8
    ),
    occupancy=st.floats(0, 100),
    code=st.from_regex(r"\A[0-9]{4}\Z"),
)
def test_native_kinds_keep_every_valid_message(
    phases: list[tuple[str, str]], occupancy: float, code: str
) -> None:
    signal = {
        "device_id": "sig-1",
        "intersection": "x",
        "time": RECEIVED_MS - 1000,
        "changes": [{"phase": phase, "state": state} for phase, state in phases],
    }
    assert len(CODECS["signal"].decode("t", json.dumps(signal).encode(), RECEIVED_MS)) == len(phases)
    detector = {
        "device_id": "det-1",
        "intersection": "x",
        "approach": "north",
        "time": RECEIVED_MS,
        "interval_s": 30,
        "occupancy_pct": occupancy,
    }
    [counted] = CODECS["detector"].decode("t", json.dumps(detector).encode(), RECEIVED_MS)
    assert counted.attributes["occupancy_pct"] == occupancy
    violation = {
        "device_id": "cam-1",
        "time": RECEIVED_MS,
        "violation_code": code,
        "violation_type": "red_light",
        "evidence_url": "https://e.example/1.jpg",
    }
    [judged] = CODECS["camera_violation"].decode("t", json.dumps(violation).encode(), RECEIVED_MS)
    assert judged.attributes["violation_code"] == code
