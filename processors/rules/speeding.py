"""Speeding (超速): a measured speed more than `tolerance_pct` (10%) above the limit of the zone (road or
lane) the track is in; with several speed zones the lowest limit in force wins, so a school-hours limit
applies during school hours. Severity bands at 10-20%, 20-50%, 50-100% and over 100% above the limit
(lower bounds inclusive); the code table gives the code and points of each band (speeding_<bound>).

One violation per track and zone: it opens at the first speed over the tolerance and is re-issued under
the same id only when the track reaches a higher band (a state change), never per message.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from core.exposures import EXPOSURE_PAIRS
from core.models import Event, Violation
from core.traffic_settings import SpeedingBandSettings, SpeedingSettings, ZoneType
from processors.rule import Emitter
from processors.traffic import TrackRule, TrafficContext, track_violation

TYPE = "speeding"
EXPOSURE = next(pair for pair in EXPOSURE_PAIRS if pair.rule == TYPE)


class SpeedIncident(msgspec.Struct):
    violation: Violation
    band_pct: float
    event_ids: list[str]


class SpeedingState(msgspec.Struct):
    incidents: dict[str, SpeedIncident] = {}
    # Zones whose limit this track's speed was measured against (counted once each; docs/denominators.md).
    measured: list[str] = []


class SpeedingRule(TrackRule[SpeedingState]):
    name: ClassVar[str] = TYPE
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"track_id", "label", "stage", "zones",
        "speed_kmh", "plate", "snapshot_url", "clip_url"})
    state_type: ClassVar[type[msgspec.Struct]] = SpeedingState
    zone_type: ClassVar[ZoneType | None] = ZoneType.SPEED_LIMIT

    def __init__(self, settings: SpeedingSettings, context: TrafficContext) -> None:
        super().__init__(settings.labels, context)
        self.settings = settings

    def band_of(self, over_pct: float) -> SpeedingBandSettings:
        """The highest band reached; the lowest band when a zone's tolerance is below it."""
        reached = [band for band in self.settings.bands if over_pct >= band.over_pct]
        return reached[-1] if reached else self.settings.bands[0]

    def on_event(self, state: SpeedingState | None, event: Event, out: Emitter) -> SpeedingState | None:
        track = self.context.track(event)
        if track is None or track.label not in self.labels or track.speed_kmh is None:
            return None if track is not None and track.ended else state
        time_ms = event.event_time_ms
        limits = [(limit, zone) for zone in self.context.zones.zones_of(track.device_id, track.zones,
                                                                         ZoneType.SPEED_LIMIT)
                  if zone.in_force(time_ms) and (limit := zone.speed_limit_kmh(time_ms)) is not None]
        if limits:
            limit, zone = min(limits, key=lambda pair: (pair[0], pair[1].name))
            state = state or SpeedingState()
            if zone.name not in state.measured:
                state.measured = [*state.measured, zone.name]
                out.count(EXPOSURE.observed, time_ms)
            tolerance = self.context.zones.threshold(TYPE, "tolerance_pct", self.settings.tolerance_pct,
                                                     device_id=track.device_id, kind=event.kind, zone=zone)
            speed = track.speed_kmh
            # Compared as products, not a quotient, so that exactly 10% over is exactly not a violation.
            if speed * 100 > limit * (100 + tolerance):
                over_pct = (speed - limit) * 100 / limit
                band = self.band_of(over_pct)
                incident = state.incidents.get(zone.name)
                if incident is None:
                    out.count(EXPOSURE.breaking, time_ms)
                if incident is None or band.over_pct > incident.band_pct:
                    event_ids = [*(incident.event_ids if incident else []), event.event_id]
                    violation = track_violation(
                        self.context, violation_type=TYPE, severity=band.severity, event=event,
                        track=track, zone=zone, incident=zone.name,
                        start_time_ms=incident.violation.start_time_ms if incident else time_ms,
                        detected_time_ms=incident.violation.detected_time_ms if incident else None,
                        event_ids=event_ids, code_type=f"{TYPE}_{band.over_pct:g}",
                        details={"speed_kmh": speed, "limit_kmh": limit, "over_pct": round(over_pct, 1),
                                 "band_pct": band.over_pct, "tolerance_pct": tolerance},
                    )
                    state.incidents[zone.name] = SpeedIncident(violation, band.over_pct, event_ids)
                    out.violation(violation)
        if track.ended:
            return None
        return state if state is not None and (state.incidents or state.measured) else None
