"""Violations judged on board by smart cameras (`camera_violation` events) pass through the same gate as
every other violation:

- validation: a report needs a `violation_type` or a `violation_code` (strings), and `plate`, `lane` and
  `evidence_url` of the right type when present; a report that fails is dead-lettered with the field named;
- de-duplication: a report of the same plate and type from the same camera within `dedup_window_s` (300 s)
  of the previous one is the same incident (cameras re-send while the vehicle is in view);
- enrichment: code, points and table version from the code table (the type is taken from the table when
  the camera sends only a code), the camera's intersection, and the registry's tags and position.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from core.models import Event, Evidence, Severity, Violation, stable_id
from core.traffic_settings import CameraViolationSettings
from processors.rule import Emitter, Rule
from processors.traffic import TrafficContext

TYPE = "camera_violation"
INVALID = "invalid_field"


class Reported(msgspec.Struct, array_like=True):
    last_ms: int
    violation_id: str


class CameraReportsState(msgspec.Struct):
    # (plate, type) -> the latest report of that incident; entries older than the window are dropped.
    recent: dict[str, Reported] = {}
    pruned_ms: int = 0


class CameraViolationRule(Rule[CameraReportsState]):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({"camera_violation"})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"violation_code", "violation_type", "lane",
        "plate", "evidence_url"})
    state_type: ClassVar[type[msgspec.Struct]] = CameraReportsState

    def __init__(self, settings: CameraViolationSettings, context: TrafficContext) -> None:
        self.settings = settings
        self.context = context
        self.state_ttl_ms = settings.state_ttl_s * 1000
        # A camera that sends only a code: the type is the table's entry with that code.
        self._type_of_code = {entry.code: name.split(":", 1)[0]
                              for name, entry in reversed(context.settings.codes.codes.items()) if entry.code}

    def on_event(self, state: CameraReportsState | None, event: Event,
                 out: Emitter) -> CameraReportsState | None:
        report = self._validate(event, out)
        if report is None:
            return state
        violation_type, code, plate = report
        state = state or CameraReportsState()
        window_ms = int(1000 * self.context.zones.threshold(
            TYPE, "dedup_window_s", self.settings.dedup_window_s, device_id=event.device_id, kind=event.kind))
        time_ms = event.event_time_ms
        if time_ms - state.pruned_ms >= window_ms:
            state.pruned_ms = time_ms
            state.recent = {key: seen for key, seen in state.recent.items()
                            if time_ms - seen.last_ms <= window_ms}
        key = f"{plate}|{violation_type}"
        seen = state.recent.get(key) if plate else None
        if seen is not None and time_ms - seen.last_ms <= window_ms:
            seen.last_ms = time_ms  # the vehicle is still in view: the same incident goes on
            return state
        violation = self._violation(event, violation_type, code, plate)
        if plate:
            state.recent[key] = Reported(time_ms, violation.violation_id)
        out.violation(violation)
        return state if state.recent else None

    def _validate(self, event: Event, out: Emitter) -> tuple[str, str | None, str | None] | None:
        attributes = event.attributes
        raw_code = attributes.get("violation_code")
        if isinstance(raw_code, int) and not isinstance(raw_code, bool):
            raw_code = str(raw_code)
        raw_type = attributes.get("violation_type")
        for name, value in (("violation_code", raw_code), ("violation_type", raw_type)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                out.reject(INVALID, f"attributes.{name}: expected a non-empty string, got {value!r:.60}")
                return None
        code = raw_code if isinstance(raw_code, str) else None
        violation_type = raw_type if isinstance(raw_type, str) else None
        for name in ("plate", "evidence_url"):
            value = attributes.get(name)
            if value is not None and not isinstance(value, str):
                out.reject(INVALID, f"attributes.{name}: expected a string, got {value!r:.60}")
                return None
        lane = attributes.get("lane")
        if lane is not None and (isinstance(lane, bool) or not isinstance(lane, int | str)):
            out.reject(INVALID, f"attributes.lane: expected a lane number or name, got {lane!r:.60}")
            return None
        if violation_type is None:
            violation_type = self._type_of_code.get(code) if code else None
            if violation_type is None:
                detail = (f"attributes.violation_type: missing, and violation_code {code!r} is not in the "
                          "code table" if code else "attributes.violation_type: missing (a report needs "
                          "violation_type or violation_code)")
                out.reject(INVALID, detail)
                return None
        plate: str | None = attributes.get("plate") or None
        return violation_type.strip().lower().replace(" ", "_"), code, plate

    def _violation(self, event: Event, violation_type: str, code: str | None, plate: str | None) -> Violation:
        entry = self.context.code(violation_type)
        table = self.context.settings.codes
        details: dict[str, Any] = {
            "source": "smart_camera",
            "reported_code": code,
            "code": code or (entry.code if entry else None),
            "points": entry.points if entry else 0,
            "code_table": f"{table.province}/{table.version}",
            "lane": event.attributes.get("lane"),
            "intersection": self.context.zones.intersection_of(event.device_id),
        }
        return Violation(
            violation_id=stable_id(TYPE, event.device_id, event.event_id),
            type=violation_type,
            severity=(entry.severity if entry and entry.severity else Severity.MEDIUM),
            device_id=event.device_id,
            start_time_ms=event.event_time_ms,
            updated_time_ms=event.event_time_ms,
            location=event.location,
            tags=event.tags,
            evidence=Evidence(event_ids=[event.event_id], details=details,
                              snapshot_url=event.attributes.get("evidence_url"), plate=plate),
        )
