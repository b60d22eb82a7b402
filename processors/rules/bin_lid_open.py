"""Lid left open: a bin reporting `lid_open` true for at least `open_after_s` of event time opens a
violation; the first reading with the lid closed clears it.

The deadline is an event-time timer, so the judgement is the same live and in a replay: it fires once
the engine's watermark passes the moment the lid was first seen open plus the limit, even when the bin
sends nothing more meanwhile (the watermark moves with every device's events and with the wall clock).
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from core.models import Event, Evidence, Location, Severity, Violation, stable_id
from core.sanitation_settings import BinLidOpenSettings
from processors.devices import DeviceLookup, Thresholds
from processors.rule import Emitter, Rule
from processors.rules._common import ZoneThresholds, clear_violation

TYPE = "bin_lid_open"


class LidState(msgspec.Struct):
    device_id: str
    # The first reading of the current open period: (event id, event time); None while closed.
    opened_by: tuple[str, int] | None = None
    # Every reading since, bounded: the first and the newest few are enough evidence.
    recent_ids: list[str] = []
    deadline_ms: int = 0
    open_violation: Violation | None = None
    # Where and whose: copied from the readings, for a violation raised by the timer.
    location: tuple[float, float] | None = None
    tags: dict[str, str] = {}


class BinLidOpenRule(Rule[LidState]):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({"bin"})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"lid_open"})
    state_type: ClassVar[type[msgspec.Struct]] = LidState

    def __init__(self, settings: BinLidOpenSettings, devices: DeviceLookup | None = None,
                 zones: ZoneThresholds | None = None, *, kinds: ZoneThresholds | None = None) -> None:
        self.settings = settings
        self.thresholds = Thresholds(devices, zones, kinds)
        self.devices = self.thresholds.devices
        self.state_ttl_ms = settings.state_ttl_s * 1000

    def setting(self, event: Event, name: str, default: float) -> float:
        return self.thresholds.value(TYPE, name, default, device_id=event.device_id, kind=event.kind)

    def on_event(self, state: LidState | None, event: Event, out: Emitter) -> LidState | None:
        lid_open = event.attributes.get("lid_open")
        if not isinstance(lid_open, bool):
            return state
        if not lid_open:
            if state is not None and state.open_violation is not None:
                closed = {"closed_at_ms": event.event_time_ms}
                out.violation(clear_violation(state.open_violation, event, closed))
            # Kept while closed: it remembers the newest judged time, so a late "open" is not judged.
            return LidState(device_id=event.device_id)
        if state is None or state.opened_by is None:
            limit_s = self.setting(event, "open_after_s", self.settings.open_after_s)
            state = LidState(device_id=event.device_id, opened_by=(event.event_id, event.event_time_ms),
                             deadline_ms=event.event_time_ms + int(limit_s * 1000))
            out.timer(state.deadline_ms)
        state.recent_ids = [*state.recent_ids, event.event_id][-5:]
        location = event.location
        state.location = None if location is None else (location.lat, location.lon)
        state.tags = event.tags
        if state.open_violation is None and event.event_time_ms >= state.deadline_ms:
            self._open(state, event.event_time_ms, out)
        return state

    def on_timer(self, state: LidState | None, key: str, at_ms: int, out: Emitter) -> LidState | None:
        # A stale timer (the lid closed and opened again since) finds another deadline and does nothing.
        if (state is not None and state.opened_by is not None and state.open_violation is None
                and at_ms == state.deadline_ms):
            self._open(state, at_ms, out)
        return state

    def _open(self, state: LidState, now_ms: int, out: Emitter) -> None:
        assert state.opened_by is not None
        first_id, first_time_ms = state.opened_by
        device = state.device_id
        state.open_violation = Violation(
            violation_id=stable_id(TYPE, device, first_id),
            type=TYPE,
            severity=Severity.LOW,
            device_id=device,
            start_time_ms=first_time_ms,
            updated_time_ms=now_ms,
            location=None if state.location is None else Location(*state.location),
            tags=state.tags,
            evidence=Evidence(
                event_ids=list(dict.fromkeys([first_id, *state.recent_ids])),
                details={"open_since_ms": first_time_ms, "open_for_s": (now_ms - first_time_ms) / 1000,
                         "open_after_s": (state.deadline_ms - first_time_ms) / 1000},
            ),
        )
        out.violation(state.open_violation)
