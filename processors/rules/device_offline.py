"""Device offline: a registered device with an `expected_interval_s` that sends nothing for
`silence_factor` (default 3) times that interval is offline; its next message clears the incident.

Silence is measured on a *watched* clock, not on the wall clock: the time from one engine tick (on_clock,
called on every processor step, idle ones included) to the next counts only if the input was live
(ingest connected to MQTT) at the first, and at most `max_tick_gap_s` of it. So time during which
citywatch was disconnected, stalled or down never counts as a device's silence. Within that, the offline
incident opens at the exact wall time the silence reaches the limit (the rule tells the engine when,
`next_due_ms`, and the engine steps there), not at the next tick: the result does not depend on how often
the engine is ticked, so a replay gives what the live run gave. A message counts as heard when the engine
judges it (after the reorder buffer), at the watched time of that step.

The watched clock and each device's silence start are deliberately not snapshotted: after a restart every
device gets a fresh grace period. The open incident itself is rule state (snapshotted), so a device that
was offline before a restart is still cleared by its first message after it.

Any message proves a device alive, so this rule takes every event kind and also sees readings the
sensor-fault inspectors flag (those come from a live device).
"""

from __future__ import annotations

from collections import OrderedDict
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
        self.max_gap_ms = int(settings.max_tick_gap_s * 1000)
        # Watched time in ms; the last tick (wall ms) and whether the input was live at it; the wall time
        # up to which watched time has been counted (the last tick or a step after it).
        self.watched_ms = 0
        self._tick_ms: int | None = None
        self._tick_live = False
        self._counted_to_ms = 0
        # Per silence limit, the devices not offline with the watched time they were last heard at (or
        # the start), oldest first: the first of each is the next to fall silent, so finding what is due
        # never scans every device.
        self._listening: dict[int, OrderedDict[str, int]] = {}
        for device_id, limit_ms in self.limits_ms.items():
            self._listening.setdefault(limit_ms, OrderedDict())[device_id] = 0
        # Devices judged since the last tick or step: heard at the watched time of that step.
        self._heard: dict[str, None] = {}

    def key_of(self, event: Event) -> str | None:
        return event.device_id if event.device_id in self.limits_ms else None

    def on_event(self, state: Liveness | None, event: Event, out: Emitter) -> Liveness | None:
        self._heard[event.device_id] = None
        state = state or Liveness()
        if state.open_violation is not None:
            out.violation(clear_violation(state.open_violation, event, {"back_at_ms": event.event_time_ms}))
            state.open_violation = None
        state.last_event_id, state.last_event_time_ms = event.event_id, event.event_time_ms
        return state

    def on_clock(self, states: KeyedState, now_wall_ms: int, input_live: bool, out: Emitter) -> None:
        self._count_to(now_wall_ms)
        self._tick_ms, self._tick_live, self._counted_to_ms = now_wall_ms, input_live, now_wall_ms
        self._judge(states, now_wall_ms, out)

    def on_step(self, states: KeyedState, at_ms: int, out: Emitter) -> None:
        self._count_to(at_ms)
        self._judge(states, at_ms, out)

    def next_due_ms(self) -> int | None:
        if self._tick_ms is None or not self._tick_live:
            return None
        silent_at = min((next(iter(listening.values())) + limit_ms
                         for limit_ms, listening in self._listening.items() if listening), default=None)
        if silent_at is None:
            return None
        due_ms = self._counted_to_ms + silent_at - self.watched_ms
        # Beyond the longest gap a tick may count, only the next tick can tell whether time passed.
        return due_ms if due_ms <= self._tick_ms + self.max_gap_ms else None

    def _count_to(self, now_wall_ms: int) -> None:
        """Add the watched time from what was counted up to `now_wall_ms`."""
        if self._tick_ms is None or not self._tick_live:
            return
        end_ms = min(now_wall_ms, self._tick_ms + self.max_gap_ms)
        if end_ms > self._counted_to_ms:
            self.watched_ms += end_ms - self._counted_to_ms
            self._counted_to_ms = end_ms

    def _judge(self, states: KeyedState, now_wall_ms: int, out: Emitter) -> None:
        """Note the devices heard since the last step, then open an incident for each silent one."""
        for device_id in self._heard:
            listening = self._listening[self.limits_ms[device_id]]
            listening[device_id] = self.watched_ms
            listening.move_to_end(device_id)
        self._heard.clear()
        for limit_ms, listening in self._listening.items():
            while listening:
                device_id, heard_at = next(iter(listening.items()))
                silent_ms = self.watched_ms - heard_at
                if silent_ms < limit_ms:
                    break
                del listening[device_id]  # back to listening when it is heard again
                state: Liveness = states.get(device_id) or Liveness()
                if state.open_violation is not None:
                    continue  # still open from before a restart
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
