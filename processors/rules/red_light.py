"""Red-light running (闯红灯): a vehicle enters the stop-line zone of an approach while that approach's
phase is red, more than `grace_s` (0.3 s) after it turned red. One violation per track and approach.

Signals and cameras meet in one state per intersection (key_of), so the phase a track is judged against
is the phase in force at the track's event time, whatever order the two streams arrived in (the engine
sorts them by event time within the allowed lateness).
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from core.exposures import EXPOSURE_PAIRS
from core.models import Event, Severity
from core.traffic_settings import PedestrianRedSettings, RedLightSettings, ZoneType
from processors.rule import Emitter, Rule
from processors.traffic import (
    PhaseState,
    TrackBook,
    TrafficContext,
    phase_details,
    phase_known,
    red_for_ms,
    track_violation,
    update_phase,
)
from processors.zones import Zone

TYPE = "red_light"
EXPOSURE = next(pair for pair in EXPOSURE_PAIRS if pair.rule == TYPE)


class IntersectionState(msgspec.Struct):
    phases: dict[str, PhaseState] = {}
    book: TrackBook = msgspec.field(default_factory=TrackBook)


class EnteringOnRedRule(Rule[IntersectionState]):
    """A track entering a zone of `zone_type` while the zone's signal phase has been red for longer than
    `grace_s`: one violation per track and incident (`incident_of`). Red-light running and pedestrians
    against red differ only in the zone type, the labels judged, the severity and what an incident is."""

    kinds: ClassVar[frozenset[str]] = frozenset({"track", "signal"})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"track_id", "label", "stage", "zones",
        "position", "plate", "snapshot_url", "clip_url", "phase", "state", "intersection"})
    state_type: ClassVar[type[msgspec.Struct]] = IntersectionState
    zone_type: ClassVar[ZoneType]
    severity: ClassVar[Severity]
    # (observed, breaking) exposure counters, for a rule whose rate is published (docs/denominators.md).
    exposure: ClassVar[tuple[str, str] | None] = None

    def __init__(self, settings: RedLightSettings | PedestrianRedSettings, context: TrafficContext) -> None:
        self.settings = settings
        self.context = context
        self.labels = frozenset(settings.labels)
        self.state_ttl_ms = settings.state_ttl_s * 1000

    def key_of(self, event: Event) -> str | None:
        return intersection_key(event, self.context)

    def incident_of(self, zone: Zone) -> str:
        return zone.name

    def zone_details(self, zone: Zone) -> dict[str, Any]:
        return {}

    def on_event(self, state: IntersectionState | None, event: Event,
                 out: Emitter) -> IntersectionState | None:
        state = state or IntersectionState()
        if event.kind == "signal":
            update_phase(state.phases, event)
            return state
        track = self.context.track(event)
        if track is None or track.label not in self.labels:
            return state
        memory, entered = state.book.observe(
            track, event, self.context.track_idle_ms,
            self.context.zones.zone_names(track.device_id, self.zone_type))
        for zone in self.context.zones.zones_of(track.device_id, entered, self.zone_type):
            incident = self.incident_of(zone)
            if incident in memory.judged or zone.phase is None or not zone.in_force(event.event_time_ms):
                continue
            threshold = self.context.zones.threshold
            grace_ms = 1000 * threshold(self.name, "grace_s", self.settings.grace_s,
                                        device_id=track.device_id, kind=event.kind, zone=zone)
            stale_s = threshold(self.name, "signal_stale_s", self.settings.signal_stale_s,
                                device_id=track.device_id, kind=event.kind, zone=zone)
            if (self.exposure is not None and incident not in memory.counted
                    and phase_known(state.phases, zone.phase, event.event_time_ms, int(stale_s * 1000))):
                memory.counted = [*memory.counted, incident]  # a crossing the rule could judge
                out.count(self.exposure[0], event.event_time_ms)
            red_ms = red_for_ms(state.phases, zone.phase, event.event_time_ms, int(stale_s * 1000))
            if red_ms is None or red_ms <= grace_ms:
                continue
            memory.judged = [*memory.judged, incident]
            if self.exposure is not None:
                out.count(self.exposure[1], event.event_time_ms)
            signal: dict[str, Any] = phase_details(state.phases, zone.phase, event.event_time_ms)
            out.violation(track_violation(
                self.context, violation_type=self.name, severity=self.severity, event=event, track=track,
                plate=memory.plate, zone=zone, incident=incident, start_time_ms=event.event_time_ms,
                event_ids=[signal["signal_event_id"], event.event_id],
                details={**self.zone_details(zone), "signal": signal, "grace_s": grace_ms / 1000},
            ))
        if track.ended:
            state.book.forget(track)
        return state


class RedLightRule(EnteringOnRedRule):
    name: ClassVar[str] = TYPE
    zone_type: ClassVar[ZoneType] = ZoneType.STOP_LINE
    severity: ClassVar[Severity] = Severity.HIGH
    exposure: ClassVar[tuple[str, str] | None] = (EXPOSURE.observed, EXPOSURE.breaking)

    def incident_of(self, zone: Zone) -> str:
        return zone.settings.approach or zone.name  # one violation per track and approach

    def zone_details(self, zone: Zone) -> dict[str, Any]:
        return {"approach": zone.settings.approach}


def intersection_key(event: Event, context: TrafficContext) -> str | None:
    """Signals by their `intersection` attribute, camera tracks by their camera's configured intersection."""
    if event.kind == "signal":
        intersection = event.attributes.get("intersection")
        return intersection if isinstance(intersection, str) and intersection else None
    return context.zones.intersection_of(event.device_id)
