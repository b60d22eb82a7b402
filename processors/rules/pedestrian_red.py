"""Pedestrian against red (行人闯红灯): a person enters a crosswalk while the crosswalk's pedestrian phase
is red, more than `grace_s` after it turned red. One violation per person track and crosswalk.

Keyed by intersection like red_light, so the pedestrian phase and the camera's tracks meet in one state.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from citywatch.models import Event, Severity
from citywatch.traffic_settings import PedestrianRedSettings, ZoneType
from processors.rule import Emitter, Rule
from processors.rules.red_light import IntersectionState, intersection_key
from processors.traffic import (
    TrafficContext,
    phase_details,
    red_for_ms,
    track_violation,
    update_phase,
)

TYPE = "pedestrian_red"


class PedestrianRedRule(Rule[IntersectionState]):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({"track", "signal"})
    state_type: ClassVar[type[msgspec.Struct]] = IntersectionState

    def __init__(self, settings: PedestrianRedSettings, context: TrafficContext) -> None:
        self.settings = settings
        self.context = context
        self.labels = frozenset(settings.labels)
        self.state_ttl_ms = settings.state_ttl_s * 1000

    def key_of(self, event: Event) -> str | None:
        return intersection_key(event, self.context)

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
            self.context.zones.zone_names(track.device_id, ZoneType.CROSSWALK))
        for zone in self.context.zones.zones_of(track.device_id, entered, ZoneType.CROSSWALK):
            if zone.name in memory.judged or zone.phase is None or not zone.in_force(event.event_time_ms):
                continue
            grace_ms = 1000 * self.context.zones.threshold(TYPE, "grace_s", self.settings.grace_s,
                                                           device_id=track.device_id, zone=zone)
            red_ms = red_for_ms(state.phases, zone.phase, event.event_time_ms,
                                int(self.settings.signal_stale_s * 1000))
            if red_ms is None or red_ms <= grace_ms:
                continue
            memory.judged = [*memory.judged, zone.name]
            signal = phase_details(state.phases, zone.phase, event.event_time_ms)
            out.violation(track_violation(
                self.context, violation_type=TYPE, severity=Severity.LOW, event=event, track=track,
                plate=memory.plate, zone=zone, incident=zone.name, start_time_ms=event.event_time_ms,
                event_ids=[signal["signal_event_id"], event.event_id],
                details={"signal": signal, "grace_s": grace_ms / 1000},
            ))
        if track.ended:
            state.book.forget(track)
        return state
