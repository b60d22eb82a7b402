"""Frigate's classifiers, sub labels and attribute labels on the track (route `frigate_attributes`), and
`frigate/tracked_object_update`: through the real codec, and by `citywatch replay` into the no-helmet rule.

Shapes as Frigate 0.17 publishes them: an attribute-type object classification model's result is the
key `<model>` of the tracked object, a (class, score) tuple (frigate/track/object_processing.py
set_object_attribute, tracked_object.py to_dict); `current_attributes` lists {label, box, score} of the
detection model's attributes in this frame; updates are docs/docs/integrations/mqtt.md's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from citywatch.replay import Replayer, read_recording
from core.models import Event
from core.settings import IngestSettings, TopicRoute, load_settings
from ingest.codecs.base import CodecError
from ingest.codecs.catalogue import build_codec
from ingest.codecs.frigate import FrigateCodec, FrigateTracks
from ingest.normalizer import Normalizer
from ingest.registry import DeviceRegistry
from tests.support.formats import REPO

T0_S = 1_764_133_200.0
RECEIVED_MS = int(T0_S * 1000) + 60_000
TRACK = "1764133201.5-m0t0r"
EVENTS = "frigate/events"
UPDATES = "frigate/tracked_object_update"


def after(at_s: float = T0_S, **extra: Any) -> dict[str, Any]:
    return {"id": TRACK, "camera": "bike-lane-cam", "label": "motorcycle", "score": 0.91,
            "frame_time": at_s, "current_zones": ["bike_lane"], "entered_zones": ["bike_lane"],
            "stationary": False, "box": [100, 200, 180, 360], "sub_label": None,
            "attributes": {}, "current_attributes": [], **extra}


def tracked(stage: str, at_s: float = T0_S, **extra: Any) -> dict[str, Any]:
    state = after(at_s, **extra)
    return {"type": stage, "before": state, "after": state}


def classification(at_s: float = T0_S + 1, **result: Any) -> dict[str, Any]:
    return {"type": "classification", "id": TRACK, "camera": "bike-lane-cam", "timestamp": at_s,
            "model": "helmet_detector", "score": 0.92, **result}


def codec(**route: Any) -> FrigateCodec:
    built = build_codec(TopicRoute(pattern="frigate/#", codec="frigate", **route), DeviceRegistry(), {})
    assert isinstance(built, FrigateCodec)
    return built


def decode(frigate: FrigateCodec, topic: str, message: dict[str, Any]) -> list[Event]:
    return frigate.decode(topic, json.dumps(message).encode(), RECEIVED_MS)


def helmet(frigate: FrigateCodec, message: dict[str, Any]) -> Any:
    [event] = decode(frigate, EVENTS, message)
    return event.attributes.get("helmet", "unset")


# --- frigate/events ----------------------------------------------------------------------------


def test_an_attribute_classifier_sets_helmet_from_its_class_by_default() -> None:
    frigate = codec()
    assert helmet(frigate, tracked("update", helmet=["no", 0.92])) is False
    assert helmet(frigate, tracked("update", helmet=["Yes", 0.88])) is True  # class names ignore case
    assert helmet(frigate, tracked("update", helmet_detector=["no", 0.9])) is False
    assert helmet(frigate, tracked("update", helmet=["none", 0.9])) == "unset"  # a class the map lacks
    assert helmet(frigate, tracked("update", helmet=[None, None])) == "unset"  # a reset classification
    assert helmet(frigate, tracked("update")) == "unset"  # no classifier: says nothing


def test_a_detector_attribute_seen_in_this_frame_or_a_sub_label_sets_helmet() -> None:
    frigate = codec()
    seen = [{"label": "helmet", "box": [120, 200, 160, 230], "score": 0.61},
            {"label": "no_helmet", "box": [120, 200, 160, 230], "score": 0.83}]
    assert helmet(frigate, tracked("update", current_attributes=seen)) is False  # the higher score wins
    # `attributes` holds the best score of every label ever seen on the track: it judges no frame.
    assert helmet(frigate, tracked("update", attributes={"no_helmet": 0.9})) == "unset"
    assert helmet(frigate, tracked("update", sub_label=["no_helmet", 0.83])) is False
    assert helmet(frigate, tracked("update", sub_label="helmet")) is True
    # The classifier's own verdict wins over labels.
    assert helmet(frigate, tracked("update", helmet=["yes", 0.9], sub_label=["no_helmet", 0.8])) is True


def test_a_sub_label_that_is_a_face_name_is_not_carried() -> None:
    [event] = decode(codec(), EVENTS, tracked("update", label="person", sub_label=["John Smith", 0.79]))
    assert "John Smith" not in json.dumps(event.attributes)


def test_a_route_maps_its_own_classifier_and_can_turn_the_default_off() -> None:
    vest = {"vest": {"models": {"hi_vis": {"vest": True, "no vest": False}}}}
    frigate = codec(frigate_attributes=vest)
    [event] = decode(frigate, EVENTS, tracked("update", hi_vis=["No Vest", 0.9], helmet=["no", 0.9]))
    assert event.attributes["vest"] is False and "helmet" not in event.attributes
    [off] = decode(codec(frigate_attributes={}), EVENTS, tracked("update", helmet=["no", 0.9]))
    assert "helmet" not in off.attributes


def test_a_malformed_classifier_result_is_rejected_naming_the_field() -> None:
    with pytest.raises(CodecError) as caught:
        decode(codec(), EVENTS, tracked("update", helmet=["no", 7]))
    assert caught.value.reason == "invalid_field" and caught.value.detail.startswith("after.helmet: score")
    with pytest.raises(CodecError) as caught:
        decode(codec(), EVENTS, tracked("update", current_attributes=[{"box": [1, 2, 3, 4]}]))
    assert caught.value.detail.startswith("after.current_attributes[0].label")


def test_the_map_is_checked_at_load() -> None:
    with pytest.raises(ValidationError, match="quote it"):
        TopicRoute.model_validate(yaml.safe_load(
            "{pattern: frigate/events, codec: frigate, frigate_attributes: {helmet: {models: "
            "{helmet: {yes: true, no: false}}}}}"))
    with pytest.raises(ValidationError, match="plate: the Frigate codec derives these itself"):
        TopicRoute(pattern="frigate/events", codec="frigate",
                   frigate_attributes={"plate": {"labels": {"x": "y"}}})
    with pytest.raises(ValidationError, match="given twice"):
        TopicRoute(pattern="frigate/events", codec="frigate",
                   frigate_attributes={"helmet": {"labels": {"Helmet": True, "helmet": True}}})


# --- frigate/tracked_object_update --------------------------------------------------------------


def test_an_update_repeats_the_tracks_last_state_with_the_new_attribute() -> None:
    frigate = codec()
    [first] = decode(frigate, EVENTS, tracked("new"))
    [update] = decode(frigate, UPDATES, classification(attribute="no"))
    assert update.device_id == "bike-lane-cam" and update.kind == "track"
    assert update.event_time_ms == int((T0_S + 1) * 1000)
    # Zones, label and position as the track last had them: no rule sees an exit and a re-entry.
    assert update.attributes == {**first.attributes, "stage": "update", "helmet": False}
    [plate] = decode(frigate, UPDATES, {"type": "lpr", "id": TRACK, "name": None, "plate": "粤B12345",
                                        "score": 0.95, "camera": "bike-lane-cam", "timestamp": T0_S + 2})
    assert plate.attributes == {**update.attributes, "plate": "粤B12345", "plate_score": 0.95}


def test_two_models_deciding_at_one_moment_are_two_events_and_the_track_memory_is_its_own() -> None:
    both = {"helmet": {"models": {"helmet_detector": {"no": False}}},
            "vest": {"models": {"hi_vis": {"no": False}}}}
    frigate = codec(frigate_attributes=both)
    [first] = decode(frigate, EVENTS, tracked("new"))
    first.attributes["label"] = "changed downstream"
    [helmet_update] = decode(frigate, UPDATES, classification(attribute="no"))
    [vest_update] = decode(frigate, UPDATES, classification(model="hi_vis", attribute="no"))
    assert helmet_update.event_id != vest_update.event_id
    assert vest_update.attributes["label"] == "motorcycle"
    assert vest_update.attributes["helmet"] is False and vest_update.attributes["vest"] is False


def test_updates_that_set_nothing_or_come_after_the_end_give_no_event() -> None:
    frigate = codec()
    decode(frigate, EVENTS, tracked("new"))
    description = {"type": "description", "id": TRACK, "description": "A rider on a red scooter."}
    face = {"type": "face", "id": TRACK, "name": "John", "score": 0.95, "camera": "bike-lane-cam",
            "timestamp": T0_S + 1}
    future = {"type": "something_new", "id": TRACK, "camera": "bike-lane-cam"}
    other_model = classification(model="dog", sub_label="buddy")
    for message in (description, face, future, other_model):
        assert decode(frigate, UPDATES, message) == [], message
    decode(frigate, EVENTS, tracked("end", T0_S + 3))
    assert decode(frigate, UPDATES, classification(T0_S + 4, attribute="no")) == []


def test_a_malformed_update_is_rejected_naming_the_field() -> None:
    cases = [({"id": TRACK}, "missing_field", "type"),
             ({"type": "lpr", "camera": "c"}, "missing_field", "id"),
             ({**classification(attribute="no"), "score": "high"}, "invalid_field", "score"),
             ({**classification(attribute="no"), "timestamp": None}, "missing_field", "timestamp"),
             (classification(), "missing_field", "attribute")]
    for message, reason, field in cases:
        with pytest.raises(CodecError) as caught:
            decode(codec(), UPDATES, message)
        assert (caught.value.reason, caught.value.detail.split(":")[0]) == (reason, field), message


def test_the_track_memory_forgets_the_oldest_track_first() -> None:
    tracks = FrigateTracks(limit=2)
    for number in range(3):
        tracks.remember("cam", f"t{number}", {"label": "car"})
    assert [tracks.recall("cam", f"t{number}") is not None for number in range(3)] == [False, True, True]


@pytest.mark.parametrize("payload", [b"", b"\xff", b"[]", b"null", b'{"type": 1, "id": "x"}',
                                     b'{"type": "lpr", "id": "x", "camera": "c", "timestamp": "now"}',
                                     b'{"type": "face", "id": "x", "camera": "c", "timestamp": 1e300}',
                                     b'{"type": "classification", "id": "x", "camera": "c", '
                                     b'"timestamp": 1764133201, "model": "helmet", "attribute": ["no"]}'])
def test_garbage_on_the_update_topic_is_a_codec_error(payload: bytes) -> None:
    with pytest.raises(CodecError) as caught:
        codec().decode(UPDATES, payload, RECEIVED_MS)
    assert caught.value.reason in ("malformed_json", "invalid_field", "implausible_time")


def test_the_events_and_update_routes_of_one_ingest_share_the_tracks() -> None:
    registry = DeviceRegistry()
    events = build_codec(TopicRoute(pattern=EVENTS, codec="frigate"), registry, {})
    updates = build_codec(TopicRoute(pattern=UPDATES, codec="frigate"), registry, {})
    events.decode(EVENTS, json.dumps(tracked("new")).encode(), RECEIVED_MS)
    [update] = updates.decode(UPDATES, json.dumps(classification(attribute="no")).encode(), RECEIVED_MS)
    assert update.attributes["label"] == "motorcycle"
    # Another ingest (another registry) knows nothing of that track.
    elsewhere = build_codec(TopicRoute(pattern=UPDATES, codec="frigate"), DeviceRegistry(), {})
    [lone] = elsewhere.decode(UPDATES, json.dumps(classification(attribute="no")).encode(), RECEIVED_MS)
    assert "label" not in lone.attributes


@pytest.mark.parametrize("config", ["configs/citywatch.yaml", "deploy/config/citywatch.yaml",
                                    "deploy/k8s/base/citywatch.yaml",
                                    "deploy/k8s/overlays/large-city/citywatch.yaml"])
def test_the_shipped_routes_read_a_helmet_update_onto_a_frigate_track(config: str) -> None:
    shipped = yaml.safe_load((REPO / config).read_text())["ingest"]["routes"]
    routes = [TopicRoute(**route) for route in shipped]
    registry = DeviceRegistry()
    normalizer = Normalizer(IngestSettings(routes=routes, accept_unknown_devices=True), 256 * 1024, registry,
                            lambda route: build_codec(route, registry, {}))
    normalizer.handle(EVENTS, json.dumps(tracked("new")).encode(), RECEIVED_MS)
    result = normalizer.handle(UPDATES, json.dumps(classification(attribute="no")).encode(), RECEIVED_MS)
    [event] = result.events
    assert event.attributes["label"] == "motorcycle" and event.attributes["helmet"] is False


# --- into the no-helmet rule ---------------------------------------------------------------------

CONFIG = {
    "ingest": {"routes": [{"pattern": EVENTS, "codec": "frigate"}, {"pattern": UPDATES, "codec": "frigate"}]},
    "devices": [{"device_id": "bike-lane-cam", "kind": "track"}],
}


def replay(tmp_path, lines: list[tuple[str, dict[str, Any], float]]) -> list[Any]:
    config = tmp_path / "city.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    recording = tmp_path / "feed.jsonl"
    recording.write_text("\n".join(
        json.dumps({"topic": topic, "time": int(at_s * 1000) + 50, "payload": payload})
        for topic, payload, at_s in lines))
    result = Replayer(load_settings(config)).run(read_recording(recording))
    assert sum(result.dead_letters.values()) == 0, result.dead_letters
    return [violation for violation in result.violations if violation.type == "no_helmet"]


def test_a_helmet_classifier_in_frigate_events_makes_the_no_helmet_rule_fire(tmp_path) -> None:
    lines = [(EVENTS, tracked("new"), T0_S),
             (EVENTS, tracked("update", T0_S + 1, helmet=["no", 0.92]), T0_S + 1),
             (EVENTS, tracked("end", T0_S + 2, helmet=["no", 0.92]), T0_S + 2)]
    [violation] = replay(tmp_path, lines)
    assert violation.device_id == "bike-lane-cam" and violation.evidence.details["track_id"] == TRACK
    wearing = [(EVENTS, tracked("update", T0_S, helmet=["yes", 0.9]), T0_S),
               (EVENTS, tracked("end", T0_S + 1, helmet=["yes", 0.9]), T0_S + 1)]
    assert replay(tmp_path, wearing) == []


def test_a_classification_update_makes_the_no_helmet_rule_fire_before_the_track_ends(tmp_path) -> None:
    lines = [(EVENTS, tracked("new"), T0_S), (UPDATES, classification(attribute="no"), T0_S + 1)]
    [violation] = replay(tmp_path, lines)
    assert violation.start_time_ms == int((T0_S + 1) * 1000)
    assert replay(tmp_path, [(EVENTS, tracked("new"), T0_S),
                             (UPDATES, classification(attribute="yes"), T0_S + 1)]) == []


def test_a_detector_no_helmet_label_makes_the_no_helmet_rule_fire(tmp_path) -> None:
    seen = [{"label": "no_helmet", "box": [120, 200, 160, 230], "score": 0.8}]
    [violation] = replay(tmp_path, [(EVENTS, tracked("new", current_attributes=seen), T0_S)])
    assert violation.evidence.details["track_id"] == TRACK
