"""Failure to yield at a crosswalk (不礼让行人): a vehicle enters a crosswalk zone while at least
`min_persons` (1) persons are inside the same crosswalk (entered and not yet left). One violation per
vehicle track and crosswalk.

Keyed by camera: the persons and the vehicle are tracks of the same camera and the same zone. A person
leaves the crosswalk when a message no longer lists the zone, when its track ends, or when its track has
been silent for `traffic.track_idle_s`. Persons inside are indexed per crosswalk, most recent last, so a
vehicle entering costs the number of persons present, not the number of tracks the camera has seen.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from core.exposures import EXPOSURE_PAIRS
from core.models import Event, Severity
from core.traffic_settings import YieldCrosswalkSettings, ZoneType
from processors.rule import Emitter, Rule
from processors.traffic import Track, TrackBook, TrafficContext, track_violation

TYPE = "yield_crosswalk"
EVIDENCE_PERSONS = 10
EXPOSURE = next(pair for pair in EXPOSURE_PAIRS if pair.rule == TYPE)


class PersonInside(msgspec.Struct, array_like=True):
    last_ms: int
    event_id: str


class CameraState(msgspec.Struct):
    # Vehicles and persons currently in a crosswalk (or vehicles already judged).
    book: TrackBook = msgspec.field(default_factory=TrackBook)
    # crosswalk -> person track -> its latest message there, ordered by that message's time.
    inside: dict[str, dict[str, PersonInside]] = {}
    pruned_ms: int = 0
    # crosswalk -> the newest time a person was in it (a message inside, or the one showing it gone): a
    # vehicle entering within `encounter_s` of it met a pedestrian (docs/denominators.md).
    person_seen_ms: dict[str, int] = {}


class YieldCrosswalkRule(Rule[CameraState]):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({"track"})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"track_id", "label", "stage", "zones", "plate",
        "snapshot_url", "clip_url"})
    state_type: ClassVar[type[msgspec.Struct]] = CameraState

    def __init__(self, settings: YieldCrosswalkSettings, context: TrafficContext) -> None:
        self.settings = settings
        self.context = context
        self.vehicles = frozenset(settings.labels)
        self.persons = frozenset(settings.person_labels)
        self.state_ttl_ms = settings.state_ttl_s * 1000
        self.encounter_ms = int(settings.encounter_s * 1000)

    def key_of(self, event: Event) -> str | None:
        # Only cameras with a crosswalk keep state here.
        has_crosswalk = self.context.zones.has_zone_type(event.device_id, ZoneType.CROSSWALK)
        return event.device_id if has_crosswalk else None

    def on_event(self, state: CameraState | None, event: Event, out: Emitter) -> CameraState | None:
        track = self.context.track(event)
        if track is None or track.label not in self.vehicles | self.persons:
            return state
        state = state or CameraState()
        idle_ms = self.context.track_idle_ms
        self._prune(state, event.event_time_ms, idle_ms, self.encounter_ms)
        crosswalks = self.context.zones.zone_names(track.device_id, ZoneType.CROSSWALK)
        if track.label in self.persons:
            self._person(state, track, event, idle_ms, crosswalks)
        else:
            self._vehicle(state, track, event, idle_ms, crosswalks, out)
        return state if state.book.tracks or state.inside or state.person_seen_ms else None

    def _person(self, state: CameraState, track: Track, event: Event, idle_ms: int,
                crosswalks: frozenset[str]) -> None:
        previous = state.book.tracks.get(track.key)
        was_in = set(previous.zones) if previous is not None else set()
        memory, _ = state.book.observe(track, event, idle_ms, crosswalks)
        now_in = set() if track.ended else set(memory.zones)
        for zone in was_in | now_in:
            state.person_seen_ms[zone] = event.event_time_ms
        for zone in was_in - now_in:
            state.inside.get(zone, {}).pop(track.key, None)
            if not state.inside.get(zone, True):
                del state.inside[zone]
        for zone in now_in:
            persons = state.inside.setdefault(zone, {})
            persons.pop(track.key, None)  # re-inserted last: the dict stays ordered by time
            persons[track.key] = PersonInside(event.event_time_ms, event.event_id)
        if track.ended:
            state.book.forget(track)

    def _vehicle(self, state: CameraState, track: Track, event: Event, idle_ms: int,
                 crosswalks: frozenset[str], out: Emitter) -> None:
        memory, entered = state.book.observe(track, event, idle_ms, crosswalks)
        for zone in self.context.zones.zones_of(track.device_id, entered, ZoneType.CROSSWALK):
            if zone.name in memory.judged or not zone.in_force(event.event_time_ms):
                continue
            needed = self.context.zones.threshold(TYPE, "min_persons", self.settings.min_persons,
                                                  device_id=track.device_id, kind=event.kind, zone=zone)
            # Most recent first; a person silent for the idle time has gone (its end message was lost),
            # and so has everyone before it. The evidence names at most EVIDENCE_PERSONS of them.
            present: list[tuple[str, PersonInside]] = []
            enough = max(needed, EVIDENCE_PERSONS)
            for key in reversed(state.inside.get(zone.name, {})):
                person = state.inside[zone.name][key]
                if person.last_ms <= event.event_time_ms - idle_ms or len(present) >= enough:
                    break
                present.append((key, person))
            seen_ms = state.person_seen_ms.get(zone.name)
            met = bool(present) or (seen_ms is not None
                                    and event.event_time_ms - seen_ms <= self.encounter_ms)
            if met and zone.name not in memory.counted:
                memory.counted = [*memory.counted, zone.name]
                state.book.tracks[track.key] = memory
                out.count(EXPOSURE.observed, event.event_time_ms)
            if len(present) < needed:
                continue
            memory.judged = [*memory.judged, zone.name]
            state.book.tracks[track.key] = memory
            out.count(EXPOSURE.breaking, event.event_time_ms)
            present.reverse()
            out.violation(track_violation(
                self.context, violation_type=TYPE, severity=Severity.HIGH, event=event, track=track,
                plate=memory.plate, zone=zone, incident=zone.name, start_time_ms=event.event_time_ms,
                event_ids=[*(person.event_id for _, person in present), event.event_id],
                details={"persons_inside": sorted(key.split("/", 1)[1] for key, _ in present),
                         "min_persons": needed},
            ))
        if track.ended:
            state.book.forget(track)

    @staticmethod
    def _prune(state: CameraState, time_ms: int, idle_ms: int, encounter_ms: int) -> None:
        if time_ms - state.pruned_ms < idle_ms // 2:
            return
        state.pruned_ms = time_ms
        horizon = time_ms - idle_ms
        state.person_seen_ms = {zone: seen_ms for zone, seen_ms in state.person_seen_ms.items()
                                if seen_ms >= time_ms - encounter_ms}
        state.inside = {zone: kept for zone, persons in state.inside.items()
                        if (kept := {key: p for key, p in persons.items() if p.last_ms > horizon})}
