"""Wrong way (逆行): a track moving through a one-way zone against the zone's allowed heading: the angle
between its displacement and the allowed heading exceeds `max_angle_deg` (120°), measured over at least
`min_distance` of travel so that jitter of a standing object never counts. One violation per track and
zone.

Displacement is measured from an anchor (the first position in the zone); each time a displacement of
`min_distance` is judged the right way, the anchor moves up, so a track that turns round later is caught.
The violation starts at the anchor's message, where the wrong-way travel that was judged began.
State is kept per track only while it is in a one-way zone or after it was reported.
"""

from __future__ import annotations

import math
from typing import ClassVar

import msgspec

from core.models import Event, Severity
from core.traffic_settings import WrongWaySettings, ZoneType
from processors.rule import Emitter
from processors.traffic import TrackRule, TrafficContext, track_violation

TYPE = "wrong_way"


class Anchor(msgspec.Struct):
    x: float
    y: float
    event_id: str
    # Event time of the anchor's message: a wrong-way displacement began there.
    time_ms: int | None = None


class WrongWayState(msgspec.Struct):
    anchors: dict[str, Anchor] = {}
    judged: list[str] = []


def bearing_deg(dx: float, dy: float) -> float:
    """Direction of a displacement on the position plane: 0 = +y, 90 = +x (like a compass)."""
    return math.degrees(math.atan2(dx, dy)) % 360.0


def angle_between_deg(a: float, b: float) -> float:
    difference = abs(a - b) % 360.0
    return min(difference, 360.0 - difference)


class WrongWayRule(TrackRule[WrongWayState]):
    name: ClassVar[str] = TYPE
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"track_id", "label", "stage", "zones",
        "position", "plate", "snapshot_url", "clip_url"})
    state_type: ClassVar[type[msgspec.Struct]] = WrongWayState
    zone_type: ClassVar[ZoneType | None] = ZoneType.ONE_WAY

    def __init__(self, settings: WrongWaySettings, context: TrafficContext) -> None:
        super().__init__(settings.labels, context)
        self.settings = settings

    def on_event(self, state: WrongWayState | None, event: Event, out: Emitter) -> WrongWayState | None:
        track = self.context.track(event)
        if track is None or track.label not in self.labels:
            return state
        if track.ended:
            return None
        state = state or WrongWayState()
        zones = self.context.zones.zones_of(track.device_id, track.zones, ZoneType.ONE_WAY)
        inside = {zone.name for zone in zones}
        state.anchors = {name: anchor for name, anchor in state.anchors.items() if name in inside}
        if track.position is None:
            return state if state.anchors or state.judged else None
        x, y = track.position
        for zone in zones:
            if zone.name in state.judged or not zone.in_force(event.event_time_ms):
                continue
            anchor = state.anchors.get(zone.name)
            if anchor is None:
                state.anchors[zone.name] = Anchor(x, y, event.event_id, event.event_time_ms)
                continue
            threshold = self.context.zones.threshold
            min_distance = threshold(TYPE, "min_distance", self.settings.min_distance,
                                     device_id=track.device_id, kind=event.kind, zone=zone)
            dx, dy = x - anchor.x, y - anchor.y
            distance = math.hypot(dx, dy)
            if distance < min_distance:
                continue
            allowed = zone.settings.allowed_heading_deg
            assert allowed is not None  # validated at load for one_way zones
            heading = bearing_deg(dx, dy)
            angle = angle_between_deg(heading, allowed)
            max_angle = threshold(TYPE, "max_angle_deg", self.settings.max_angle_deg,
                                  device_id=track.device_id, kind=event.kind, zone=zone)
            if angle <= max_angle:
                state.anchors[zone.name] = Anchor(x, y, event.event_id, event.event_time_ms)
                continue
            state.judged = [*state.judged, zone.name]
            del state.anchors[zone.name]
            out.violation(track_violation(
                self.context, violation_type=TYPE, severity=Severity.HIGH, event=event, track=track,
                zone=zone, incident=zone.name,
                start_time_ms=event.event_time_ms if anchor.time_ms is None else anchor.time_ms,
                event_ids=[anchor.event_id, event.event_id],
                details={"heading_deg": round(heading, 1), "allowed_heading_deg": allowed,
                         "angle_deg": round(angle, 1), "max_angle_deg": max_angle,
                         "distance": round(distance, 2), "min_distance": min_distance},
            ))
        return state if state.anchors or state.judged else None
