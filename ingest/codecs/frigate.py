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
"""

from __future__ import annotations

from typing import Any

from core.models import Event, stable_id
from ingest.codecs import common as c
from ingest.codecs.base import CodecError

STAGES = ("new", "update", "end")
MPH_TO_KMH = 1.609344


class FrigateCodec:
    name = "frigate"

    def __init__(
        self, *, media_base_url: str | None = None, speed_unit: str = "kmh", device_id_prefix: str = ""
    ) -> None:
        self._media_base_url = media_base_url.rstrip("/") if media_base_url else None
        self._speed_factor = MPH_TO_KMH if speed_unit == "mph" else 1.0
        self._prefix = device_id_prefix

    def decode(self, topic: str, payload: bytes, received_time_ms: int) -> list[Event]:
        message = c.obj(c.parse_json(payload), "")
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
        device_id = self._prefix + camera
        return [
            Event(
                event_id=stable_id("frigate", device_id, track_id, event_time_ms, stage),
                device_id=device_id,
                kind="track",
                event_time_ms=event_time_ms,
                ingest_time_ms=received_time_ms,
                attributes={key: value for key, value in attributes.items() if value is not None},
                source=self.name,
            )
        ]


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
        value = after.get(key)
        if value is None or value == "" or value == []:
            continue
        score: Any = after.get(f"{key}_score")
        if isinstance(value, list) and 1 <= len(value) <= 2 and isinstance(value[0], str):
            if len(value) == 2:
                score = value[1]
            value = value[0]
        if not isinstance(value, str):
            raise CodecError(
                c.INVALID_FIELD,
                f"after.{key}: expected a string or a [value, score] pair, got {c.preview(value)}",
            )
        if score is not None and not (c.is_finite_number(score) and 0 <= score <= 1):
            raise CodecError(c.INVALID_FIELD, f"after.{key}: score must be 0..1, got {c.preview(score)}")
        if key == "sub_label" and not _looks_like_plate(value):
            # A sub label is also a face name or a known plate's nickname: only plate-like text counts.
            continue
        return value, None if score is None else float(score)
    return None, None


def _looks_like_plate(value: str) -> bool:
    stripped = value.replace(" ", "").replace("-", "").replace("·", "")
    return 4 <= len(stripped) <= 10 and any(ch.isdigit() for ch in stripped)
