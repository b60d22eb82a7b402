"""The messages the simulated devices send, in the formats real devices use.

Each builder returns `(topic, payload)` in the shape citywatch's codecs take from the real thing, so the
demo runs through the same ingest routes (configs/citywatch.yaml) as a city's devices:

- sanitation and environment sensors: the native format on `citywatch/events/{device_id}`
  (docs/native-format.md);
- signal controllers, detectors and smart cameras: citywatch's JSON schemas (configs/schemas/, their
  examples in configs/schemas/examples/) on `citywatch/signal/`, `citywatch/detector/` and
  `citywatch/camera-violations/`;
- cameras: Frigate NVR's `frigate/events` (the tracked object with its `before` and `after` state, the
  keys of Frigate 0.16's documented message: tests/conformance/frigate/v0_16_events_update_plate_speed.yaml)
  and `frigate/tracked_object_update` classification results (Frigate 0.17's documented attribute-type
  update: tests/conformance/frigate/v0_17_tracked_object_update_classification_attribute.yaml).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

NATIVE_PREFIX = "citywatch/events/"
SIGNAL_PREFIX = "citywatch/signal/"
DETECTOR_PREFIX = "citywatch/detector/"
CAMERA_VIOLATION_PREFIX = "citywatch/camera-violations/"
FRIGATE_EVENTS = "frigate/events"
FRIGATE_UPDATES = "frigate/tracked_object_update"

Message = tuple[str, bytes]


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def native(device_id: str, kind: str, time_ms: int, attributes: dict[str, Any]) -> Message:
    body = {"device_id": device_id, "kind": kind, "time": time_ms, "attributes": attributes}
    return NATIVE_PREFIX + device_id, _encode(body)


def signal(device_id: str, intersection: str, time_ms: int, plan: str, cycle_s: float,
           changes: list[dict[str, Any]]) -> Message:
    """One controller message: the phase changes at `time_ms` (a full status at start-up lists every
    phase: the rules judge a phase only once its controller has reported it)."""
    body = {"device_id": device_id, "intersection": intersection, "time": time_ms, "plan": plan,
            "cycle_s": cycle_s, "changes": changes}
    return SIGNAL_PREFIX + device_id, _encode(body)


def detector(device_id: str, intersection: str, approach: str, lane: int, time_ms: int, interval_s: float,
             volume_veh: int, occupancy_pct: float, speed_kmh: float) -> Message:
    """One detector interval, reported at its end."""
    body = {"device_id": device_id, "intersection": intersection, "approach": approach, "lane": lane,
            "time": time_ms, "interval_s": interval_s, "volume_veh": volume_veh,
            "occupancy_pct": occupancy_pct, "speed_kmh": speed_kmh}
    return DETECTOR_PREFIX + device_id, _encode(body)


def camera_violation(device_id: str, event_id: str, time_ms: int, code: str, violation_type: str,
                     plate: str, lane: int, evidence_url: str) -> Message:
    body = {"device_id": device_id, "event_id": event_id, "time": time_ms, "violation_code": code,
            "violation_type": violation_type, "plate": plate, "plate_color": "blue", "lane": lane,
            "evidence_url": evidence_url}
    return CAMERA_VIOLATION_PREFIX + device_id, _encode(body)


@dataclass(frozen=True)
class TrackedObject:
    """A Frigate tracked object's state as `frigate/events` carries it in `before` and `after`."""

    track_id: str
    camera: str
    label: str
    start_time: float
    frame_time: float
    box: tuple[float, float, float, float]
    current_zones: tuple[str, ...] = ()
    entered_zones: tuple[str, ...] = ()
    stationary: bool = False
    speed_kmh: float = 0.0
    velocity_angle: float = 0.0
    plate: str | None = None
    has_snapshot: bool = True
    score: float = 0.82
    extra: dict[str, Any] = field(default_factory=dict)

    def moved(self, frame_time: float, box: tuple[float, float, float, float], zones: tuple[str, ...],
              **changes: Any) -> TrackedObject:
        """The state at a later frame: in `zones` now, having entered every zone it was ever in."""
        entered = tuple(dict.fromkeys((*self.entered_zones, *zones)))
        return replace(self, frame_time=frame_time, box=box, current_zones=zones, entered_zones=entered,
                       **changes)

    def as_frigate(self, ended: bool = False) -> dict[str, Any]:
        x1, y1, x2, y2 = self.box
        area = int((x2 - x1) * (y2 - y1))
        region = [max(0.0, x1 - 40), max(0.0, y1 - 40), x2 + 40, y2 + 40]  # the detector's crop around it
        state: dict[str, Any] = {
            "id": self.track_id,
            "camera": self.camera,
            "frame_time": self.frame_time,
            "snapshot": {"frame_time": self.frame_time, "box": list(self.box), "area": area,
                         "region": region, "score": self.score, "attributes": []},
            "label": self.label,
            "sub_label": None,
            "top_score": self.score,
            "false_positive": False,
            "start_time": self.start_time,
            "end_time": self.frame_time if ended else None,
            "score": self.score,
            "box": list(self.box),
            "area": area,
            "ratio": round((x2 - x1) / max(1.0, y2 - y1), 6),
            "region": region,
            "current_zones": list(self.current_zones),
            "entered_zones": list(self.entered_zones),
            "thumbnail": None,
            "has_snapshot": self.has_snapshot,
            "has_clip": self.has_snapshot,
            "active": not self.stationary,
            "stationary": self.stationary,
            "motionless_count": 30 if self.stationary else 0,
            "position_changes": 2,
            "attributes": {},
            "current_attributes": [],
            "current_estimated_speed": self.speed_kmh,
            "average_estimated_speed": self.speed_kmh,
            "velocity_angle": self.velocity_angle,
            "recognized_license_plate": self.plate,
            "recognized_license_plate_score": 0.91 if self.plate else None,
            **self.extra,
        }
        return state


def frigate_event(stage: str, before: TrackedObject, after: TrackedObject) -> Message:
    """`frigate/events`: `new` when the object becomes a true positive, `update` on a zone change or a
    better snapshot, `end` when tracking ends."""
    body = {"type": stage, "before": before.as_frigate(), "after": after.as_frigate(ended=stage == "end")}
    return FRIGATE_EVENTS, _encode(body)


def frigate_classification(track: TrackedObject, timestamp: float, model: str, attribute: str,
                           score: float) -> Message:
    """`frigate/tracked_object_update` of an attribute-type object classification model (0.17+)."""
    body = {"type": "classification", "id": track.track_id, "camera": track.camera, "timestamp": timestamp,
            "model": model, "attribute": attribute, "score": score}
    return FRIGATE_UPDATES, _encode(body)
