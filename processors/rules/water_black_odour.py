"""Black-odorous water (黑臭水体): each reading of a water body is classified not, lightly or heavily
black-odorous from transparency, dissolved oxygen (DO), redox potential (ORP) and ammonia nitrogen
(NH3-N), with the thresholds of the 2015 urban black-odorous water remediation guideline:

| indicator | lightly | heavily |
|---|---|---|
| transparency (cm) | 10-25 (*) | < 10 (*) |
| DO (mg/L) | 0.2-2.0 | < 0.2 |
| ORP (mV) | -200-50 | < -200 |
| NH3-N (mg/L) | 8.0-15 | > 15 |

(*) where the water is shallower than 25 cm, the transparency limit is 40% of the depth.

A reading is as bad as its worst indicator (any heavy indicator: heavy; else any light one: light); a
reading without an indicator is not judged. `consecutive` black-odorous readings in a row flag the body
(severity from the worst of them); `clear_consecutive` clean readings in a row clear it. Probes of one
body share its state through the `water_body` tag, so the body is judged on all its probes' readings.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar

import msgspec

from core.exposures import EXPOSURE_PAIRS
from core.models import Event, Severity, Violation
from core.sanitation_settings import WaterBlackOdourSettings
from processors.devices import DeviceLookup, Thresholds
from processors.rule import Emitter, Rule
from processors.rules._common import (
    Reading,
    Reporting,
    ZoneThresholds,
    clear_violation,
    count_reporting,
    expected_interval_ms,
    missing_report_between,
    number,
    open_violation,
)

TYPE = "water_black_odour"
EXPOSURE = next(pair for pair in EXPOSURE_PAIRS if pair.rule == TYPE)
# Settings a device or zone may override.
_THRESHOLDS = ("transparency_light_cm", "transparency_heavy_cm", "shallow_depth_cm", "shallow_ratio",
               "do_light_mgl", "do_heavy_mgl", "orp_light_mv", "orp_heavy_mv", "nh3n_light_mgl",
               "nh3n_heavy_mgl", "consecutive", "clear_consecutive", "max_gap_intervals")


class Grade(IntEnum):
    NOT = 0
    LIGHT = 1
    HEAVY = 2


def classify(event: Event, s: WaterBlackOdourSettings) -> tuple[Grade, dict[str, str]] | None:
    """The reading's grade and each indicator's grade; None when it carries no indicator."""
    grades: dict[str, Grade] = {}
    transparency = number(event, "transparency_cm")
    if transparency is not None:
        light_limit, heavy_limit = s.transparency_light_cm, s.transparency_heavy_cm
        depth = number(event, "depth_cm")
        if depth is not None and depth < s.shallow_depth_cm:
            # Shallow water cannot show 25 cm of transparency: the limit becomes a share of the depth
            # (the heavy limit can never be above it).
            light_limit = s.shallow_ratio * depth
            heavy_limit = min(heavy_limit, light_limit)
        grades["transparency_cm"] = (Grade.HEAVY if transparency < heavy_limit
                                     else Grade.LIGHT if transparency <= light_limit else Grade.NOT)
    dissolved_oxygen = number(event, "do_mgl")
    if dissolved_oxygen is not None:
        grades["do_mgl"] = (Grade.HEAVY if dissolved_oxygen < s.do_heavy_mgl
                            else Grade.LIGHT if dissolved_oxygen <= s.do_light_mgl else Grade.NOT)
    redox = number(event, "orp_mv")
    if redox is not None:
        grades["orp_mv"] = (Grade.HEAVY if redox < s.orp_heavy_mv
                            else Grade.LIGHT if redox <= s.orp_light_mv else Grade.NOT)
    ammonia = number(event, "nh3n_mgl")
    if ammonia is not None:
        grades["nh3n_mgl"] = (Grade.HEAVY if ammonia > s.nh3n_heavy_mgl
                              else Grade.LIGHT if ammonia >= s.nh3n_light_mgl else Grade.NOT)
    if not grades:
        return None
    return max(grades.values()), {name: grade.name.lower() for name, grade in grades.items()}


class WaterState(msgspec.Struct):
    # Black-odorous readings in a row: (event id, time, grade), bounded by `consecutive`; `since` is the
    # first of them (event id, time), where an incident begins.
    run: list[Reading] = []
    clean_run: int = 0
    open_violation: Violation | None = None
    since: tuple[str, int] | None = None
    # The first clean reading of the current clean run (event time): where an incident ends.
    clean_since_ms: int | None = None
    # The newest judged reading of the body (event time), to tell a missing report.
    last_ms: int | None = None
    # Per probe, its newest reading counted in the water-sensor minutes (docs/denominators.md).
    probes: dict[str, Reporting] = {}


class WaterBlackOdourRule(Rule[WaterState]):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({"water"})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"transparency_cm", "depth_cm", "do_mgl",
        "orp_mv", "nh3n_mgl"})
    state_type: ClassVar[type[msgspec.Struct]] = WaterState

    def __init__(self, settings: WaterBlackOdourSettings, devices: DeviceLookup | None = None,
                 zones: ZoneThresholds | None = None, *, kinds: ZoneThresholds | None = None) -> None:
        self.settings = settings
        self.thresholds = Thresholds(devices, zones, kinds)
        self.devices = self.thresholds.devices
        self.state_ttl_ms = settings.state_ttl_s * 1000

    def setting(self, event: Event, name: str, default: float) -> float:
        return self.thresholds.value(TYPE, name, default, device_id=event.device_id, kind=event.kind)

    def key_of(self, event: Event) -> str | None:
        return event.tags.get(self.settings.body_tag) or event.device_id

    def settings_for(self, event: Event) -> WaterBlackOdourSettings:
        """The thresholds for this probe (processors.devices.Thresholds has the precedence)."""
        overrides = {}
        for name in _THRESHOLDS:
            default = getattr(self.settings, name)
            value = self.setting(event, name, default)
            if value != default:
                overrides[name] = int(value) if isinstance(default, int) else value
        return self.settings.model_copy(update=overrides) if overrides else self.settings

    def on_event(self, state: WaterState | None, event: Event, out: Emitter) -> WaterState | None:
        settings = self.settings_for(event)
        judged = classify(event, settings)
        if judged is None:
            return state
        state = state or WaterState()
        self._judge(state, event, settings, judged, out)
        # A probe's minutes are out of standard while its body is flagged black-odorous.
        state.probes[event.device_id] = count_reporting(
            out, state.probes.get(event.device_id), event, state.open_violation is not None,
            (EXPOSURE.observed, EXPOSURE.breaking), self.devices, lambda: settings.max_gap_intervals)
        return state

    def _judge(self, state: WaterState, event: Event, settings: WaterBlackOdourSettings,
               judged: tuple[Grade, dict[str, str]], out: Emitter) -> None:
        grade, indicators = judged
        body = self.key_of(event) or event.device_id
        time_ms = event.event_time_ms
        if state.last_ms is not None and missing_report_between(
                state.last_ms, time_ms, expected_interval_ms(self.devices, event.device_id),
                settings.max_gap_intervals):
            # A missing report is neither black-odorous nor clean: both runs start again.
            state.run, state.since, state.clean_run, state.clean_since_ms = [], None, 0, None
        state.last_ms = time_ms
        if grade is Grade.NOT:
            state.run, state.since = [], None
            if state.clean_run == 0:
                state.clean_since_ms = time_ms
            state.clean_run += 1
            if state.open_violation is not None and state.clean_run >= settings.clear_consecutive:
                cleared = {"cleared_indicators": indicators, "clean_readings": state.clean_run}
                out.violation(clear_violation(state.open_violation, event, cleared,
                                              ended_at_ms=state.clean_since_ms))
                state.open_violation = None
            return
        state.clean_run, state.clean_since_ms = 0, None
        reading = (event.event_id, time_ms, float(grade))
        if not state.run:
            state.since = (event.event_id, time_ms)
        elif state.since is None:  # state snapshotted before `since` was kept
            state.since = (state.run[0][0], state.run[0][1])
        state.run = [*state.run, reading][-settings.consecutive:]
        if state.open_violation is None and len(state.run) >= settings.consecutive:
            worst = Grade(int(max(g for _, _, g in state.run)))
            state.open_violation = open_violation(
                TYPE, body, event, state.run, Severity.HIGH if worst is Grade.HEAVY else Severity.MEDIUM,
                {"water_body": body, "grade": worst.name.lower(),
                 "grades": [Grade(int(g)).name.lower() for _, _, g in state.run],
                 "latest_indicators": indicators, "consecutive": settings.consecutive},
                begun_by=state.since, device_id=event.device_id)
            out.violation(state.open_violation)
