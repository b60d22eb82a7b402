"""Frigate NVR tracked-object messages (`frigate/events`) -> `track` events, Frigate 0.13 to 0.17.

Frigate publishes one message when a tracked object becomes a true positive (`new`), one per zone
change or better snapshot (`update`) and one when tracking ends (`end`), each with the object's state
`before` and `after` the change. We emit the `after` state as one `track` event keyed by camera and
track id; `zones` (current_zones) and `entered_zones` are carried so a rule can derive entries and
exits by comparing consecutive events of one track.

Version differences handled here: `sub_label` is a string (older releases, score in `sub_label_score`
if at all) or a [value, score] pair (newer ones; some send a one-element [value]);
`recognized_license_plate` (0.16+) is a string with `recognized_license_plate_score`, or a pair;
0.16 adds `current_estimated_speed` / `average_estimated_speed` (in the unit of Frigate's
`ui.unit_system`) and `velocity_angle`. Unknown keys are ignored.

Classifiers reach the track through the route's `frigate_attributes` map (e.g. `helmet`, which the
no_helmet rule reads): a Frigate 0.17+ attribute-type object classification model's class in
`after.<model>` ([class, score]), a label of the detection model seen on the object in this frame
(`after.current_attributes`), or a sub label (a sub-label-type classifier, a detector logo). Nothing
else of a sub label that is not a plate (face names, for one) is carried.

`{topic_prefix}/tracked_object_update` (0.15+) is decoded by the same codec, chosen by the topic's last
level: `lpr` (plate), `face` and `classification` updates whose result the map (or the plate) turns
into an attribute become one `track` event with the track's last known state from `frigate/events` and
that attribute; `description` (GenAI text) and update types newer than this codec are accepted and
ignored, as is an update of a track whose `end` was already read.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from core.ingest_config import FrigateAttribute
from core.models import Event, stable_id
from ingest.codecs import common as c
from ingest.codecs.base import CodecError

STAGES = ("new", "update", "end")
MPH_TO_KMH = 1.609344
UPDATE_TOPIC = "tracked_object_update"
# Update types that can carry something a track attribute is read from; others (GenAI `description`,
# types of later releases) are accepted and ignored.
READ_UPDATE_TYPES = ("lpr", "face", "classification")
# Tracks remembered for their updates: many minutes of a busy camera set (an update follows its track's
# messages within seconds), a few MB at most.
REMEMBERED_TRACKS = 4096


class FrigateTracks:
    """The attributes of the last track event of each recent Frigate track, by device and track id.

    A tracked object update names the track and camera but not its label, zones or position; the event
    it becomes repeats the track's last known state, so the traffic rules read it like any other message
    of the track (an update without zones would look like an exit and the next message like an entry).
    Bounded: the oldest tracks are forgotten first.
    """

    def __init__(self, limit: int = REMEMBERED_TRACKS) -> None:
        self._limit = limit
        self._last: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    def remember(self, device_id: str, track_id: str, attributes: dict[str, Any]) -> None:
        key = (device_id, track_id)
        self._last[key] = dict(attributes)  # a copy: what happens to the event later is not the track's
        self._last.move_to_end(key)
        while len(self._last) > self._limit:
            self._last.popitem(last=False)

    def recall(self, device_id: str, track_id: str) -> dict[str, Any] | None:
        return self._last.get((device_id, track_id))


class FrigateCodec:
    name = "frigate"

    def __init__(
        self,
        *,
        media_base_url: str | None = None,
        speed_unit: str = "kmh",
        device_id_prefix: str = "",
        attributes: Mapping[str, FrigateAttribute] | None = None,
        tracks: FrigateTracks | None = None,
    ) -> None:
        self._media_base_url = media_base_url.rstrip("/") if media_base_url else None
        self._speed_factor = MPH_TO_KMH if speed_unit == "mph" else 1.0
        self._prefix = device_id_prefix
        self._attributes = dict(attributes or {})
        self._tracks = tracks if tracks is not None else FrigateTracks()

    def decode(self, topic: str, payload: bytes, received_time_ms: int) -> list[Event]:
        message = c.obj(c.parse_json(payload), "")
        if topic.rsplit("/", 1)[-1] == UPDATE_TOPIC:
            return self._tracked_object_update(message, received_time_ms)
        return self._tracked_object(message, received_time_ms)

    def _tracked_object(self, message: dict[str, Any], received_time_ms: int) -> list[Event]:
        stage = c.text(message, "type", "")
        if stage not in STAGES:
            raise CodecError(
                c.INVALID_FIELD, f"type: expected one of new, update, end, got {c.preview(stage)}"
            )
        after = c.obj(c.field(message, "after", ""), "after")
        if after.get("false_positive") is True:
            # Frigate only publishes true positives; a false positive here is noise, not an observation.
            raise CodecError(c.UNSUPPORTED, "after.false_positive: the object is marked as a false positive")
        track_id = c.text(after, "id", "after")
        camera = c.text(after, "camera", "after", max_len=128)
        assert track_id is not None and camera is not None
        frame_time = c.field(after, "frame_time", "after")
        event_time_ms = c.plausible(
            c.seconds_ms(frame_time, "after.frame_time"), "after.frame_time", received_time_ms
        )
        label = c.text(after, "label", "after", max_len=64)
        attributes: dict[str, Any] = {
            "track_id": track_id,
            "stage": stage,
            "label": label,
            "score": c.number(after, "score", "after", required=False, low=0, high=1),
            "zones": c.strings(after, "current_zones", "after"),
            "entered_zones": c.strings(after, "entered_zones", "after"),
            "stationary": bool(c.boolean(after, "stationary", "after", required=False)),
        }
        box = c.array(after, "box", "after", required=False)
        if box is not None:
            attributes["box"] = _box(box)
            x1, y1, x2, y2 = attributes["box"]
            attributes["position"] = [(x1 + x2) / 2, (y1 + y2) / 2]
        speed = c.number(after, "current_estimated_speed", "after", required=False, low=0)
        if speed is None:
            speed = c.number(after, "average_estimated_speed", "after", required=False, low=0)
        if speed is not None:
            attributes["speed_kmh"] = round(speed * self._speed_factor, 3)
        heading = c.number(after, "velocity_angle", "after", required=False, low=-360, high=360)
        if heading is not None:
            attributes["heading_deg"] = heading % 360
        plate, plate_score = _plate(after)
        if plate is not None:
            attributes["plate"] = plate
            attributes["plate_score"] = plate_score
        if self._media_base_url is not None:
            if c.boolean(after, "has_snapshot", "after", required=False):
                attributes["snapshot_url"] = f"{self._media_base_url}/api/events/{track_id}/snapshot.jpg"
            if c.boolean(after, "has_clip", "after", required=False):
                attributes["clip_url"] = f"{self._media_base_url}/api/events/{track_id}/clip.mp4"
        attributes.update(self._mapped(after))
        device_id = self._prefix + camera
        attributes = {key: value for key, value in attributes.items() if value is not None}
        self._tracks.remember(device_id, track_id, attributes)
        return [
            Event(
                event_id=stable_id("frigate", device_id, track_id, event_time_ms, stage),
                device_id=device_id,
                kind="track",
                event_time_ms=event_time_ms,
                ingest_time_ms=received_time_ms,
                attributes=attributes,
                source=self.name,
            )
        ]

    def _mapped(self, after: dict[str, Any]) -> dict[str, Any]:
        """The mapped track attributes in an `after` state: a classification model's class first, then a
        detection-model attribute label seen in this frame, then the sub label."""
        found: dict[str, Any] = {}
        current: list[tuple[str, float]] | None = None
        sub_label: str | None = None
        for name, source in self._attributes.items():
            for model, classes in source.models.items():
                value, _ = _labelled(after, model, "after")
                if value is not None and value.strip().lower() in classes:
                    found[name] = classes[value.strip().lower()]
                    break
            if name in found or not source.labels:
                continue
            if current is None:
                current = _current_attribute_labels(after)
                sub_label = _labelled(after, "sub_label", "after")[0]
            # The highest-scoring label of this frame that the map knows.
            for label, _score in sorted(current, key=lambda item: -item[1]):
                if label in source.labels:
                    found[name] = source.labels[label]
                    break
            if name not in found and sub_label is not None and sub_label.strip().lower() in source.labels:
                found[name] = source.labels[sub_label.strip().lower()]
        return found

    def _tracked_object_update(self, message: dict[str, Any], received_time_ms: int) -> list[Event]:
        update_type = c.text(message, "type", "", max_len=64)
        track_id = c.text(message, "id", "")
        assert update_type is not None and track_id is not None
        if update_type not in READ_UPDATE_TYPES:
            return []
        camera = c.text(message, "camera", "", max_len=128)
        assert camera is not None
        event_time_ms = c.plausible(
            c.seconds_ms(c.field(message, "timestamp", ""), "timestamp"), "timestamp", received_time_ms
        )
        score = c.number(message, "score", "", required=False, low=0, high=1)
        found: dict[str, Any] = {}
        model: str | None = None
        if update_type == "lpr":
            plate = c.text(message, "plate", "", required=False, max_len=64)
            if plate is not None:
                found["plate"] = plate
                found["plate_score"] = score
            found.update(self._classified(None, c.text(message, "name", "", required=False)))
        elif update_type == "face":
            found.update(self._classified(None, c.text(message, "name", "", required=False)))
        else:
            model = c.text(message, "model", "")
            value = c.text(message, "sub_label", "", required=False)
            if value is None:
                value = c.text(message, "attribute", "")
            found.update(self._classified(model, value))
        device_id = self._prefix + camera
        known = self._tracks.recall(device_id, track_id)
        if not found or (known is not None and known.get("stage") == "end"):
            # Nothing a track attribute is read from, or the track is over and was judged on its end.
            return []
        attributes = {**(known or {"track_id": track_id}), "stage": "update", **found}
        attributes = {key: value for key, value in attributes.items() if value is not None}
        if known is not None:
            self._tracks.remember(device_id, track_id, attributes)
        return [
            Event(
                # Two models may decide about one track at one moment: each update is its own event.
                event_id=stable_id("frigate", device_id, track_id, event_time_ms, UPDATE_TOPIC, update_type,
                                   model or ""),
                device_id=device_id,
                kind="track",
                event_time_ms=event_time_ms,
                ingest_time_ms=received_time_ms,
                attributes=attributes,
                source=self.name,
            )
        ]

    def _classified(self, model: str | None, value: str | None) -> dict[str, Any]:
        """The mapped attributes a classification model's class (or a name, with no model) sets."""
        if value is None:
            return {}
        folded = value.strip().lower()
        found: dict[str, Any] = {}
        for name, source in self._attributes.items():
            classes = source.models.get(model) if model is not None else None
            if classes is not None and folded in classes:
                found[name] = classes[folded]
            elif folded in source.labels:
                found[name] = source.labels[folded]
        return found


def _box(box: list[Any]) -> list[float]:
    if len(box) != 4 or not all(c.is_finite_number(v) for v in box):
        raise CodecError(
            c.INVALID_FIELD, f"after.box: expected [x1, y1, x2, y2] numbers, got {c.preview(box)}"
        )
    if box[2] < box[0] or box[3] < box[1]:
        raise CodecError(c.INVALID_FIELD, f"after.box: x2/y2 must not be left of/above x1/y1, got {box}")
    return [float(v) for v in box]


def _plate(after: dict[str, Any]) -> tuple[str | None, float | None]:
    """The plate and its score from recognized_license_plate, else from a plate-like sub_label.

    Either field is a string (with the score, if any, in `{field}_score`), a [value, score] pair or, as
    some releases send it, a one-element [value] list.
    """
    for key in ("recognized_license_plate", "sub_label"):
        value, score = _labelled(after, key, "after")
        if value is None:
            continue
        if key == "sub_label" and not _looks_like_plate(value):
            # A sub label is also a face name or a known plate's nickname: only plate-like text counts.
            continue
        return value, score
    return None, None


def _labelled(node: dict[str, Any], key: str, path: str) -> tuple[str | None, float | None]:
    """A value Frigate sends with its score: a string (score, if any, in `{key}_score`), a
    [value, score] pair (a Python tuple as Frigate keeps it) or a one-element [value] list."""
    value = node.get(key)
    if value is None or value == "" or value == []:
        return None, None
    score: Any = node.get(f"{key}_score")
    if isinstance(value, list) and 1 <= len(value) <= 2 and isinstance(value[0], str | None):
        if len(value) == 2:
            score = value[1]
        value = value[0]
        if value is None:  # a classification reset to nothing: (None, None)
            return None, None
    if not isinstance(value, str):
        raise CodecError(
            c.INVALID_FIELD,
            f"{path}.{key}: expected a string or a [value, score] pair, got {c.preview(value)}",
        )
    if score is not None and not (c.is_finite_number(score) and 0 <= score <= 1):
        raise CodecError(c.INVALID_FIELD, f"{path}.{key}: score must be 0..1, got {c.preview(score)}")
    return value, None if score is None else float(score)


def _current_attribute_labels(after: dict[str, Any]) -> list[tuple[str, float]]:
    """(label, score) of the detection-model attributes seen on the object in this frame, folded to
    lower case: `after.current_attributes`, a list of {label, box, score}."""
    entries = c.array(after, "current_attributes", "after", required=False) or []
    labels: list[tuple[str, float]] = []
    for index, entry in enumerate(entries):
        path = f"after.current_attributes[{index}]"
        entry = c.obj(entry, path)
        label = c.text(entry, "label", path, max_len=128)
        assert label is not None
        score = c.number(entry, "score", path, required=False, low=0, high=1)
        labels.append((label.strip().lower(), 0.0 if score is None else score))
    return labels


def _looks_like_plate(value: str) -> bool:
    stripped = value.replace(" ", "").replace("-", "").replace("·", "")
    return 4 <= len(stripped) <= 10 and any(ch.isdigit() for ch in stripped)
