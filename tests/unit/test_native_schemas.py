"""The published JSON Schemas (configs/schemas/) and the signal, detector and camera_violation codecs agree:
every example passes both, every invalid fixture fails both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from core.models import Location
from ingest.codecs.base import CodecError
from tests.support.formats import DATA, RECEIVED_MS, SCHEMAS, TOPICS, codec_for

KINDS = ("signal", "detector", "camera_violation")


def validator(kind: str) -> Draft202012Validator:
    common = json.loads((SCHEMAS / "common.schema.json").read_text())
    registry: Registry[Any] = Registry().with_resource(common["$id"], Resource.from_contents(common))
    schema = json.loads((SCHEMAS / f"{kind}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=registry)


@pytest.mark.parametrize("kind", KINDS)
def test_the_example_passes_the_schema_and_the_codec(kind: str) -> None:
    example = SCHEMAS / "examples" / f"{kind}.json"
    validator(kind).validate(json.loads(example.read_text()))
    events = codec_for(kind).decode(TOPICS[kind], example.read_bytes(), RECEIVED_MS)
    assert events and all(event.kind == kind for event in events)


@pytest.mark.parametrize(
    "path",
    [p for kind in KINDS for p in sorted((DATA / kind / "invalid").glob("*.json"))],
    ids=lambda p: f"{p.parent.parent.name}/{p.name}",
)
def test_an_invalid_message_fails_the_schema_and_the_codec(path: Path) -> None:
    kind = path.parent.parent.name
    errors = list(validator(kind).iter_errors(json.loads(path.read_text())))
    assert errors, f"{path.name} passes the published schema"
    with pytest.raises(CodecError) as caught:
        codec_for(kind).decode(TOPICS[kind], path.read_bytes(), RECEIVED_MS)
    field = caught.value.detail.split(":", 1)[0]
    assert field and " " not in field, caught.value.detail


def test_signal_message_gives_one_event_per_change_at_its_own_time() -> None:
    payload = (SCHEMAS / "examples" / "signal.json").read_bytes()
    amber, ped = codec_for("signal").decode(TOPICS["signal"], payload, RECEIVED_MS)
    assert amber.attributes == {
        "intersection": "shennan-fuhua",
        "phase": "north_through",
        "state": "amber",
        "remaining_s": 3,
        "plan": "am-peak",
        "cycle_s": 140,
    }
    assert amber.event_time_ms == 1_795_669_200_000 and ped.event_time_ms == 1_795_669_200_400
    assert ped.attributes["state"] == "red" and amber.event_id != ped.event_id


def test_detector_flow_is_computed_from_volume() -> None:
    payload = (SCHEMAS / "examples" / "detector.json").read_bytes()
    [event] = codec_for("detector").decode(TOPICS["detector"], payload, RECEIVED_MS)
    assert event.attributes == {
        "intersection": "shennan-fuhua",
        "approach": "north",
        "interval_s": 60,
        "volume_veh": 14,
        "occupancy_pct": 11.5,
        "speed_kmh": 38.2,
        "lane": 2,
        "flow_veh_h": 840,
    }


def test_camera_violation_keeps_its_evidence_and_own_id() -> None:
    payload = (SCHEMAS / "examples" / "camera_violation.json").read_bytes()
    [event] = codec_for("camera_violation").decode(TOPICS["camera_violation"], payload, RECEIVED_MS)
    assert event.event_id == "epolice-0001-20261126-000123" and event.event_time_ms == 1_795_669_200_000
    assert event.attributes["plate"] == "粤B12345" and event.attributes["violation_type"] == "red_light"
    assert len(event.attributes["evidence_urls"]) == 2 and event.location is None
    with_position = json.loads(payload)
    with_position["location"] = {"lat": 22.54, "lon": 114.05}
    [placed] = codec_for("camera_violation").decode("t", json.dumps(with_position).encode(), RECEIVED_MS)
    assert placed.location == Location(lat=22.54, lon=114.05)
