"""Illegal parking (违法停车): a vehicle stationary inside a no-parking or sidewalk zone for at least
`dwell_s` (300 s) continuously, counted only while the zone is in force (a no-parking zone scheduled
07:00-09:00 starts counting at 07:00 for a car standing there since 06:50).

The violation opens at the dwell limit through an event-time timer, so a parked car that sends no more
messages is still caught; it clears, with its end time, when the vehicle moves or leaves the zone, when
its track ends, when the zone goes out of force, or (track lost) at its last message once the track has
been silent for `traffic.track_idle_s`. State is one small entry per candidate track and is dropped as soon
as the vehicle is no longer a candidate.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from core.exposures import EXPOSURE_PAIRS
from core.models import Event, Severity, Violation, ViolationStatus
from core.traffic_settings import IllegalParkingSettings, ZoneType
from processors.rule import Emitter, Rule
from processors.traffic import Track, TrafficContext, track_violation
from processors.zones import FOREVER_MS, Zone, dwell_due, in_force_until

TYPE = "illegal_parking"
# The kind of the events judged, for kind overrides (the dwell is also looked up without an event).
TRACK = "track"
EXPOSURE = next(pair for pair in EXPOSURE_PAIRS if pair.rule == TYPE)


class ParkingState(msgspec.Struct):
    zone: str
    # Stationary in the zone since (event time of the first stationary message in it).
    since_ms: int
    first_event_id: str
    # The latest message of the track: what the violation shows (plate, snapshot, tags, location).
    last_event: Event
    # Pending timers (event time); a timer that no longer matches its field is stale and ignored.
    due_ms: int | None = None
    illegal_since_ms: int | None = None
    until_ms: int | None = None
    idle_due_ms: int | None = None
    open: Violation | None = None
    # The latest plate read and snapshot of the track (often on one message only).
    plate: str | None = None
    snapshot_url: str | None = None
    # Exposures (docs/denominators.md): standing time counted up to here (None: up to `since_ms`), and
    # while a violation is open, illegal time counted up to here.
    occupied_to_ms: int | None = None
    illegal_to_ms: int | None = None


class IllegalParkingRule(Rule[ParkingState]):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({TRACK})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"track_id", "label", "stage", "zones",
        "stationary", "plate", "snapshot_url", "clip_url"})
    state_type: ClassVar[type[msgspec.Struct]] = ParkingState

    def __init__(self, settings: IllegalParkingSettings, context: TrafficContext) -> None:
        self.settings = settings
        self.context = context
        self.labels = frozenset(settings.labels)
        self.zone_types = tuple(ZoneType(zone_type) for zone_type in settings.zone_types)
        self.state_ttl_ms = context.track_idle_ms

    def key_of(self, event: Event) -> str | None:
        track_id = event.attributes.get("track_id")
        if track_id is None or not any(self.context.zones.has_zone_type(event.device_id, zone_type)
                                       for zone_type in self.zone_types):
            return None
        return f"{event.device_id}/{track_id}"

    def on_event(self, state: ParkingState | None, event: Event, out: Emitter) -> ParkingState | None:
        track = self.context.track(event)
        if track is None or track.label not in self.labels:
            return state
        time_ms = event.event_time_ms
        parked = track.stationary and not track.ended
        zones = self.context.zones.zones_of(track.device_id, track.zones, *self.zone_types) if parked else []
        if state is not None:
            # Standing until this message (or, for a lost track, until its last one).
            _count_standing(state, time_ms, out)
        if state is not None and state.zone not in {zone.name for zone in zones}:
            if state.open is not None:
                reason = "track_ended" if track.ended else "moved" if not track.stationary else "left_zone"
                out.violation(_clear(state.open, time_ms, time_ms, [event.event_id], reason))
            state = None
        if not zones:
            return None
        if state is None:
            # Standing in several restricted zones: judged in the one whose dwell limit comes first.
            candidate = min(zones, key=lambda zone: (self._due(zone, time_ms), zone.name))
            state = ParkingState(zone=candidate.name, since_ms=time_ms, first_event_id=event.event_id,
                                 last_event=event)
            self._arm(state, candidate, time_ms, out)
        state.last_event = event
        state.plate = track.plate or state.plate
        state.snapshot_url = track.snapshot_url or track.clip_url or state.snapshot_url
        return state

    def on_timer(self, state: ParkingState | None, key: str, at_ms: int, out: Emitter) -> ParkingState | None:
        if state is None:
            return None
        zone = self.context.zones.zone(state.last_event.device_id, state.zone)
        if zone is None:
            return None
        if state.open is None and state.due_ms == at_ms:
            self._open(state, zone, at_ms, out)
            # Illegal from where the dwell began counting: the violation's start.
            state.illegal_to_ms = state.open.start_time_ms if state.open is not None else None
            _count_standing(state, at_ms, out)
        elif state.open is not None and state.until_ms == at_ms:
            _count_standing(state, at_ms, out)
            out.violation(_clear(state.open, at_ms, at_ms, [], "zone_not_in_force"))
            state.open, state.until_ms, state.illegal_to_ms = None, None, None
            self._arm(state, zone, at_ms, out)
        if state.idle_due_ms == at_ms:
            last_ms = state.last_event.event_time_ms
            if last_ms + self.context.track_idle_ms <= at_ms:
                if state.open is not None:
                    # Its last message is the last proof it stood there, but the opening assumed it
                    # still stood there at the dwell limit.
                    end_ms = max(last_ms, state.open.updated_time_ms)
                    _count_standing(state, end_ms, out)
                    out.violation(_clear(state.open, end_ms, at_ms, [], "track_lost"))
                return None
            state.idle_due_ms = last_ms + self.context.track_idle_ms
            out.timer(state.idle_due_ms)
        return state

    def _dwell_ms(self, zone: Zone) -> int:
        return int(1000 * self.context.zones.threshold(
            TYPE, "dwell_s", self.settings.dwell_s, device_id=zone.camera, kind=TRACK, zone=zone))

    def _due(self, zone: Zone, since_ms: int) -> int:
        due = dwell_due(zone.schedule, since_ms, self._dwell_ms(zone))
        return FOREVER_MS if due is None else due[1]

    def _arm(self, state: ParkingState, zone: Zone, from_ms: int, out: Emitter) -> None:
        due = dwell_due(zone.schedule, max(state.since_ms, from_ms), self._dwell_ms(zone))
        state.illegal_since_ms, state.due_ms = due if due is not None else (None, None)
        if state.due_ms is not None:
            out.timer(state.due_ms)

    def _open(self, state: ParkingState, zone: Zone, at_ms: int, out: Emitter) -> None:
        event = state.last_event
        track = self.context.track(event)
        assert track is not None and state.illegal_since_ms is not None  # stored only for tracks
        violation = self._violation(state, zone, track, event, state.illegal_since_ms)
        state.open = msgspec.structs.replace(
            violation, updated_time_ms=at_ms,
            evidence=msgspec.structs.replace(violation.evidence, snapshot_url=state.snapshot_url),
        )
        out.violation(state.open)
        state.due_ms = None
        until_ms = in_force_until(zone.schedule, at_ms)
        if until_ms < FOREVER_MS:
            state.until_ms = until_ms
            out.timer(until_ms)
        state.idle_due_ms = event.event_time_ms + self.context.track_idle_ms
        out.timer(state.idle_due_ms)

    def _violation(self, state: ParkingState, zone: Zone, track: Track, event: Event,
                   illegal_since_ms: int) -> Violation:
        dwell_s = self.context.zones.threshold(TYPE, "dwell_s", self.settings.dwell_s,
                                               device_id=zone.camera, kind=TRACK, zone=zone)
        return track_violation(
            self.context, violation_type=TYPE, severity=Severity.MEDIUM, event=event, track=track,
            zone=zone, incident=f"{zone.name}@{illegal_since_ms}", start_time_ms=illegal_since_ms,
            plate=state.plate,
            event_ids=[state.first_event_id, event.event_id],
            details={"stationary_since_ms": state.since_ms, "dwell_s": dwell_s,
                     "schedule": zone.schedule.name if zone.schedule else None},
        )


def _count_standing(state: ParkingState, to_ms: int, out: Emitter) -> None:
    """Count the vehicle's standing time up to `to_ms` as occupied, and as illegal while its violation is
    open, on its camera (the state outlives messages: timers count too)."""
    event = state.last_event
    tags = event.tags
    occupied_to_ms = state.since_ms if state.occupied_to_ms is None else state.occupied_to_ms
    if to_ms > occupied_to_ms:
        out.count_time(EXPOSURE.observed, occupied_to_ms, to_ms, device_id=event.device_id, tags=tags)
        state.occupied_to_ms = to_ms
    if state.open is not None and state.illegal_to_ms is not None and to_ms > state.illegal_to_ms:
        out.count_time(EXPOSURE.breaking, state.illegal_to_ms, to_ms, device_id=event.device_id, tags=tags)
        state.illegal_to_ms = to_ms


def _clear(opened: Violation, end_ms: int, at_ms: int, event_ids: list[str], reason: str) -> Violation:
    return msgspec.structs.replace(
        opened,
        status=ViolationStatus.CLEARED,
        end_time_ms=end_ms,
        updated_time_ms=max(at_ms, opened.updated_time_ms),
        evidence=msgspec.structs.replace(
            opened.evidence,
            event_ids=[*opened.evidence.event_ids, *event_ids],
            details={**opened.evidence.details, "cleared_because": reason,
                     "parked_s": (end_ms - opened.start_time_ms) / 1000},
        ),
    )
