"""No helmet (一盔): a motorcycle or e-bike rider that the camera's classifier reports without a helmet
(`helmet: false`; a missing value says nothing) on `consecutive` messages in a row. One violation per
track; it starts at the first message of that run (the rider was without a helmet from then on),
whatever `consecutive` is. Motorcyclists get the points of `no_helmet:motorcycle` in the code table;
e-bike riders have no licence points.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from core.exposures import EXPOSURE_PAIRS
from core.models import Event, Severity
from core.traffic_settings import NoHelmetSettings
from processors.rule import Emitter
from processors.traffic import TrackRule, TrafficContext, track_violation

TYPE = "no_helmet"
EXPOSURE = next(pair for pair in EXPOSURE_PAIRS if pair.rule == TYPE)


class HelmetState(msgspec.Struct):
    # The newest messages of the run without a helmet, bounded by `consecutive`.
    event_ids: list[str] = []
    reported: bool = False
    # Event time of the first message of the run: where the incident began.
    since_ms: int | None = None
    # Whether the rider was counted as observed (its first helmet classification; docs/denominators.md).
    counted: bool = False


class NoHelmetRule(TrackRule[HelmetState]):
    name: ClassVar[str] = TYPE
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"track_id", "label", "stage", "zones", "helmet",
        "plate", "snapshot_url", "clip_url"})
    state_type: ClassVar[type[msgspec.Struct]] = HelmetState

    def __init__(self, settings: NoHelmetSettings, context: TrafficContext) -> None:
        super().__init__(settings.labels, context)
        self.settings = settings

    def judges(self, event: Event) -> bool:
        return event.attributes.get("label") in self.labels

    def on_event(self, state: HelmetState | None, event: Event, out: Emitter) -> HelmetState | None:
        track = self.context.track(event)
        if track is None:
            return state
        state = state or HelmetState()
        if track.helmet is not None and not state.counted:
            state.counted = True
            out.count(EXPOSURE.observed, event.event_time_ms)
        if not state.reported and track.helmet is not None:
            if track.helmet:
                state.event_ids, state.since_ms = [], None
            else:
                if not state.event_ids or state.since_ms is None:
                    state.since_ms = event.event_time_ms
                needed = int(self.context.zones.threshold(TYPE, "consecutive", self.settings.consecutive,
                                                          device_id=track.device_id, kind=event.kind))
                state.event_ids = [*state.event_ids, event.event_id][-needed:]
                if len(state.event_ids) >= needed:
                    state.reported = True
                    out.count(EXPOSURE.breaking, event.event_time_ms)
                    out.violation(track_violation(
                        self.context, violation_type=TYPE, severity=Severity.MEDIUM, event=event, track=track,
                        zone=None, incident="helmet", start_time_ms=state.since_ms,
                        event_ids=state.event_ids, details={"consecutive": needed},
                    ))
        if track.ended:
            return None
        return state if state.reported or state.event_ids or state.counted else None
