"""Device offline: a registered device with an `expected_interval_s` that sends nothing for
`silence_factor` (default 3) times that interval is offline; its next message clears the incident.

Silence is measured on a *watched* clock, not on the wall clock: the engine's wall-clock tick
(on_clock, called on every processor step, idle ones included) adds the time since the previous tick
only while the input is live (ingest connected to MQTT) and at most `max_tick_gap_s` per tick. So time
during which citywatch was disconnected, stalled or down never counts as a device's silence. The
watched clock and each device's silence start are deliberately not snapshotted: after a restart every
device gets a fresh grace period. The open incident itself is rule state (snapshotted), so a device that
was offline before a restart is still cleared by its first message after it.

Any message proves a device alive, so this rule takes every event kind and also sees readings the
sensor-fault inspectors flag (those come from a live device).
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from core.models import Event, Evidence, Location, Severity, Violation, stable_id
from core.sanitation_settings import DeviceOfflineSettings
from core.settings import DeviceSettings
from processors.devices import Thresholds
from processors.rule import ANY_KIND, Emitter, Rule
from processors.rules._common import clear_violation
from processors.state import KeyedState

TYPE = "device_offline"
# The registry bounds the keys, so state never needs to expire (about 300 years).
_FOREVER_MS = 10**13


class Liveness(msgspec.Struct):
    last_event_id: str | None = None
    last_event_time_ms: int | None = None
    open_violation: Violation | None = None


class DeviceOfflineRule(Rule[Liveness]):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({ANY_KIND})
    reads_attributes: ClassVar[frozenset[str]] = frozenset()
    state_type: ClassVar[type[msgspec.Struct]] = Liveness
    inspects_readings: ClassVar[bool] = True  # runs before the sensor-fault gate: any message is life
    uses_clock: ClassVar[bool] = True

    def __init__(self, settings: DeviceOfflineSettings, devices: list[DeviceSettings],
                 thresholds: Thresholds | None = None) -> None:
        self.settings = settings
        self.state_ttl_ms = _FOREVER_MS
        thresholds = thresholds or Thresholds()
        self.limits_ms = {
            d.device_id: int(d.expected_interval_s * 1000 * thresholds.value(
                TYPE, "silence_factor", settings.silence_factor, device_id=d.device_id, kind=d.kind))
            for d in devices if d.expected_interval_s is not None and d.active
        }
        self.devices = {d.device_id: d for d in devices if d.device_id in self.limits_ms}
        # Watched time, in ms, and the watched time of each device's last message (or of the start).
        self.watched_ms = 0
        self._last_tick_ms: int | None = None
        self._last_check_ms = -(2**62)
        self._heard_at: dict[str, int] = {}

    def key_of(self, event: Event) -> str | None:
        return event.device_id if event.device_id in self.limits_ms else None

    def on_event(self, state: Liveness | None, event: Event, out: Emitter) -> Liveness | None:
        self._heard_at[event.device_id] = self.watched_ms
        state = state or Liveness()
        if state.open_violation is not None:
            out.violation(clear_violation(state.open_violation, event, {"back_at_ms": event.event_time_ms}))
            state.open_violation = None
        state.last_event_id, state.last_event_time_ms = event.event_id, event.event_time_ms
        return state

    def on_clock(self, states: KeyedState, now_wall_ms: int, input_live: bool, out: Emitter) -> None:
        if self._last_tick_ms is not None and input_live:
            gap = max(0, now_wall_ms - self._last_tick_ms)
            self.watched_ms += min(gap, int(self.settings.max_tick_gap_s * 1000))
        self._last_tick_ms = now_wall_ms
        if now_wall_ms - self._last_check_ms < self.settings.check_every_s * 1000:
            return
        self._last_check_ms = now_wall_ms
        for device_id, limit_ms in self.limits_ms.items():
            heard_at = self._heard_at.setdefault(device_id, self.watched_ms)
            silent_ms = self.watched_ms - heard_at
            if silent_ms < limit_ms:
                continue
            state: Liveness = states.get(device_id) or Liveness()
            if state.open_violation is not None:
                continue
            state.open_violation = self._offline(device_id, state, silent_ms, limit_ms, now_wall_ms)
            out.violation(state.open_violation)
            states.set(device_id, state, states.last_time_ms(device_id) or 0)

    def _offline(self, device_id: str, state: Liveness, silent_ms: int, limit_ms: int,
                 now_wall_ms: int) -> Violation:
        device = self.devices[device_id]
        # Deterministic: one incident per silence after a given last message (or never heard from).
        last = state.last_event_id or "never-heard"
        location = None if device.lat is None or device.lon is None else Location(device.lat, device.lon)
        return Violation(
            violation_id=stable_id(TYPE, device_id, last),
            type=TYPE,
            severity=Severity.MEDIUM,
            device_id=device_id,
            start_time_ms=now_wall_ms,
            updated_time_ms=max(now_wall_ms, state.last_event_time_ms or 0),
            location=location,
            tags=dict(device.tags),
            evidence=Evidence(
                event_ids=[] if state.last_event_id is None else [state.last_event_id],
                details={"silent_s": silent_ms / 1000, "limit_s": limit_ms / 1000,
                         "expected_interval_s": device.expected_interval_s,
                         "last_event_time_ms": state.last_event_time_ms},
            ),
        )
