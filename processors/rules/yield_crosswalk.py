"""Failure to yield at a crosswalk (不礼让行人): a vehicle enters a crosswalk zone while at least
`min_persons` (1) persons are inside the same crosswalk (entered and not yet left). One violation per
vehicle track and crosswalk.

Keyed by camera: the persons and the vehicle are tracks of the same camera and the same zone. A person
leaves the crosswalk when a message no longer lists the zone, when its track ends, or when its track has
been silent for `traffic.track_idle_s`.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from citywatch.models import Event, Severity
from citywatch.traffic_settings import YieldCrosswalkSettings, ZoneType
from processors.rule import Emitter, Rule
from processors.traffic import TrackBook, TrafficContext, read_track, track_violation

TYPE = "yield_crosswalk"


class CameraState(msgspec.Struct):
    book: TrackBook = msgspec.field(default_factory=TrackBook)


class YieldCrosswalkRule(Rule[CameraState]):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({"track"})
    state_type: ClassVar[type[msgspec.Struct]] = CameraState

    def __init__(self, settings: YieldCrosswalkSettings, context: TrafficContext) -> None:
        self.settings = settings
        self.context = context
        self.vehicles = frozenset(settings.labels)
        self.persons = frozenset(settings.person_labels)
        self.state_ttl_ms = settings.state_ttl_s * 1000

    def key_of(self, event: Event) -> str | None:
        # Only cameras with a crosswalk keep state here.
        has_crosswalk = self.context.zones.has_zone_type(event.device_id, ZoneType.CROSSWALK)
        return event.device_id if has_crosswalk else None

    def on_event(self, state: CameraState | None, event: Event, out: Emitter) -> CameraState | None:
        track = read_track(event)
        if track is None or track.label not in self.vehicles | self.persons:
            return state
        state = state or CameraState()
        idle_ms = self.context.track_idle_ms
        if track.label in self.persons:
            state.book.observe(track, event, idle_ms)
        else:
            memory, entered = state.book.observe(track, event, idle_ms)
            for zone in self.context.zones.zones_of(track.device_id, entered, ZoneType.CROSSWALK):
                if zone.name in memory.judged or not zone.in_force(event.event_time_ms):
                    continue
                # A person silent for the idle time has gone (its end message was lost).
                present_since = event.event_time_ms - idle_ms
                inside = {key: person for key, person in state.book.tracks.items()
                          if person.label in self.persons and zone.name in person.zones
                          and person.last_ms > present_since}
                needed = self.context.zones.threshold(TYPE, "min_persons", self.settings.min_persons,
                                                      device_id=track.device_id, zone=zone)
                if len(inside) < needed:
                    continue
                memory.judged = [*memory.judged, zone.name]
                out.violation(track_violation(
                    self.context, violation_type=TYPE, severity=Severity.HIGH, event=event, track=track,
                    plate=memory.plate, zone=zone, incident=zone.name, start_time_ms=event.event_time_ms,
                    event_ids=[*(person.last_event_id for person in inside.values()), event.event_id],
                    details={"persons_inside": sorted(key.split("/", 1)[1] for key in inside),
                             "min_persons": needed},
                ))
        if track.ended:
            state.book.forget(track)
        return state if state.book.tracks else None
