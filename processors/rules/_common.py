"""Pieces the sanitation and environment rules share: reading numbers, building violations, telling a
run of readings from readings with a missing report between them, and a threshold rule with hysteresis
(open at one level on N readings in a row, clear at another).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, ClassVar

import msgspec

from core.models import Event, Evidence, Severity, Violation, ViolationStatus, stable_id
from processors.devices import DeviceLookup, GroupedThresholds, Thresholds
from processors.rule import Emitter, Rule

# (event id, event time ms, value): a reading kept as evidence.
Reading = tuple[str, int, float]

ZoneThresholds = GroupedThresholds


def number(event: Event, name: str) -> float | None:
    """The attribute as a float, or None when it is absent, null or not a number (bools are not)."""
    value: Any = event.attributes.get(name)
    # Decoded readings are plain floats and ints: their exact types first (every rule reads a few
    # attributes of every reading, and this is cheaper than the isinstance tests below).
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        return float(value)
    if kind is bool or not isinstance(value, int | float):
        return None
    return float(value)


def expected_interval_ms(devices: DeviceLookup, device_id: str) -> int | None:
    """How often the device reports (its registered `expected_interval_s`), or None when unknown."""
    device = devices.get(device_id)
    if device is None or device.expected_interval_s is None:
        return None
    return int(device.expected_interval_s * 1000)


def missing_report_between(last_ms: int, time_ms: int, interval_ms: int | None,
                           max_gap_intervals: float) -> bool:
    """Whether at least one report is missing between two readings: they are further apart than
    `max_gap_intervals` intervals. A run of readings "in a row" ends there: the missing report is not
    evidence either way. Without a known interval nothing can be said to be missing."""
    return interval_ms is not None and time_ms - last_ms > max_gap_intervals * interval_ms


# Without a registered `expected_interval_s`, the longest gap between two readings that counts as
# reporting time (docs/denominators.md).
UNKNOWN_INTERVAL_GAP_MS = 3_600_000


class Reporting(msgspec.Struct, array_like=True):
    """A device's newest reading counted in its rule's sensor minutes: when, and whether the rule held the
    device out of standard after judging it (an open violation)."""

    time_ms: int
    breaking: bool


def count_reporting(out: Emitter, last: Reporting | None, event: Event, breaking: bool,
                    counters: tuple[str, str], devices: DeviceLookup,
                    max_gap_intervals: Callable[[], float]) -> Reporting:
    """Count the time from the device's previous reading to this one as reporting time (`counters[0]`),
    and as out of standard (`counters[1]`) when the device was out of standard after the previous reading;
    returns this reading's record (`last`, updated).

    A gap counts up to the rule's own missing-report bound, `max_gap_intervals` expected intervals, or
    UNKNOWN_INTERVAL_GAP_MS for a device without an interval. The bound is asked for only for a gap longer
    than one interval (it is above one interval: the settings require `max_gap_intervals` > 1), since
    resolving a threshold costs more than the rest of a bin reading's judgement."""
    time_ms = event.event_time_ms
    if last is None:
        return Reporting(time_ms, breaking)
    if time_ms > last.time_ms:
        end_ms = time_ms
        interval_ms = expected_interval_ms(devices, event.device_id)
        if interval_ms is None:
            end_ms = min(time_ms, last.time_ms + UNKNOWN_INTERVAL_GAP_MS)
        elif time_ms - last.time_ms > interval_ms:
            end_ms = min(time_ms, last.time_ms + int(interval_ms * max_gap_intervals()))
        out.count_time(counters[0], last.time_ms, end_ms)
        if last.breaking:
            out.count_time(counters[1], last.time_ms, end_ms)
    last.time_ms, last.breaking = time_ms, breaking
    return last


def open_violation(type_: str, key: str, event: Event, evidence: list[Reading], severity: Severity,
                   details: dict[str, Any], *, begun_by: tuple[str, int],
                   device_id: str | None = None) -> Violation:
    """An open violation that began with the event `begun_by` (event id, event time): its start time, and
    with the rule and the key its id. `evidence` is what the judgement rests on, possibly trimmed: the
    incident's begin is never taken from it."""
    first_id, first_time_ms = begun_by
    return Violation(
        violation_id=stable_id(type_, key, first_id),
        type=type_,
        severity=severity,
        device_id=device_id or event.device_id,
        start_time_ms=first_time_ms,
        updated_time_ms=event.event_time_ms,
        location=event.location,
        tags=event.tags,
        evidence=Evidence(event_ids=[event_id for event_id, _, _ in evidence], details=details),
    )


def clear_violation(opened: Violation, event: Event, details: dict[str, Any], *,
                    ended_at_ms: int | None = None) -> Violation:
    """The cleared state of `opened`, judged on `event`; never older than the open state. The incident
    ended at `ended_at_ms` when the clearing took several readings (the first of them), else at `event`."""
    time_ms = max(event.event_time_ms, opened.updated_time_ms)
    return msgspec.structs.replace(
        opened,
        status=ViolationStatus.CLEARED,
        end_time_ms=time_ms if ended_at_ms is None else max(ended_at_ms, opened.start_time_ms),
        updated_time_ms=time_ms,
        evidence=msgspec.structs.replace(
            opened.evidence,
            event_ids=[*opened.evidence.event_ids, event.event_id],
            details={**opened.evidence.details, **details},
        ),
    )


class Direction(StrEnum):
    AT_OR_ABOVE = "at_or_above"  # opens at value >= open level, clears below the clear level
    ABOVE = "above"  # opens at value > open level, clears at or below the clear level
    AT_OR_BELOW = "at_or_below"  # opens at value <= open level, clears above the clear level


class Channel(msgspec.Struct, frozen=True):
    """One quantity a level rule watches on an event, with the levels that apply to this device.

    A struct rather than a frozen dataclass: one is made per watched attribute of every reading, and a
    frozen dataclass's constructor costs several times more.
    """

    name: str
    value: float
    open_level: float
    clear_level: float
    direction: Direction
    severity: Severity
    # Extra facts for the evidence (units, converted values ...).
    details: Mapping[str, Any] = {}

    def opens(self) -> bool:
        if self.direction is Direction.AT_OR_ABOVE:
            return self.value >= self.open_level
        if self.direction is Direction.ABOVE:
            return self.value > self.open_level
        return self.value <= self.open_level

    def clears(self) -> bool:
        if self.direction is Direction.AT_OR_ABOVE:
            return self.value < self.clear_level
        if self.direction is Direction.ABOVE:
            return self.value <= self.clear_level
        return self.value > self.clear_level


class Level(msgspec.Struct):
    # The opening readings in a row, newest last, bounded by `consecutive`; `since` is the first of them
    # (event id, event time), kept apart so the incident's start never depends on the bound.
    run: list[Reading] = []
    open_violation: Violation | None = None
    since: tuple[str, int] | None = None


class LevelState(msgspec.Struct):
    channels: dict[str, Level] = {}
    # The newest reading counted in the rule's sensor minutes (rules with `exposure` only).
    reporting: Reporting | None = None


class LevelRule(Rule[LevelState]):
    """A device-keyed rule over one or more channels (e.g. NH3 and H2S), each its own incident.

    A channel opens after `consecutive` opening readings in a row and clears on the first clearing
    reading; between the two levels nothing changes, so a value hovering at the limit never flaps. A
    missing report (readings further apart than `max_gap_intervals` of the device's expected interval)
    breaks the run.
    """

    state_type: ClassVar[type[msgspec.Struct]] = LevelState
    consecutive: int = 1
    max_gap_intervals: float = 1.5
    # (sensor minutes, minutes out of standard) exposure counters, for a rule whose rate is published
    # (docs/denominators.md): out of standard while any channel has an open violation.
    exposure: ClassVar[tuple[str, str] | None] = None

    def __init__(self, devices: DeviceLookup | None, zones: ZoneThresholds | None, state_ttl_s: int,
                 kinds: ZoneThresholds | None = None) -> None:
        self.thresholds = Thresholds(devices, zones, kinds)
        self.devices = self.thresholds.devices
        self.state_ttl_ms = state_ttl_s * 1000

    def setting(self, event: Event, name: str, default: float) -> float:
        """A threshold for this event's device (processors.devices.Thresholds has the precedence)."""
        return self.thresholds.value(self.name, name, default, device_id=event.device_id, kind=event.kind)

    def channels(self, event: Event) -> list[Channel]:
        raise NotImplementedError

    def on_event(self, state: LevelState | None, event: Event, out: Emitter) -> LevelState | None:
        channels = self.channels(event)
        if not channels:
            return state
        state = state or LevelState()
        for channel in channels:
            level = state.channels.get(channel.name)
            if level is None:
                if not channel.opens():
                    continue  # nothing open and nothing counting: a quiet reading changes nothing
                level = Level()
            self._judge(level, channel, event, out, int(self.setting(event, "consecutive", self.consecutive)))
            if level.open_violation is None and not level.run:
                state.channels.pop(channel.name, None)
            else:
                state.channels[channel.name] = level
        if self.exposure is not None:
            out_of_standard = any(level.open_violation is not None for level in state.channels.values())
            state.reporting = count_reporting(
                out, state.reporting, event, out_of_standard, self.exposure, self.devices,
                lambda: self.setting(event, "max_gap_intervals", self.max_gap_intervals))
        # Kept even when empty: it remembers the newest judged time, so a late reading is not judged
        # (state still expires after the rule's TTL of silence).
        return state

    def _judge(self, level: Level, channel: Channel, event: Event, out: Emitter, consecutive: int) -> None:
        if channel.opens():
            interval_ms = expected_interval_ms(self.devices, event.device_id)
            if level.run and missing_report_between(
                    level.run[-1][1], event.event_time_ms, interval_ms,
                    self.setting(event, "max_gap_intervals", self.max_gap_intervals)):
                level.run = []
            if not level.run:
                level.since = (event.event_id, event.event_time_ms)
            elif level.since is None:  # state snapshotted before `since` was kept
                level.since = (level.run[0][0], level.run[0][1])
            level.run = [*level.run, (event.event_id, event.event_time_ms, channel.value)][-consecutive:]
            if level.open_violation is None and len(level.run) >= consecutive and level.since is not None:
                details = {
                    "attribute": channel.name,
                    "values": [value for _, _, value in level.run],
                    "open_level": channel.open_level,
                    "clear_level": channel.clear_level,
                    "direction": channel.direction.value,
                    "consecutive": consecutive,
                    **dict(channel.details),
                }
                level.open_violation = open_violation(
                    self.name, f"{event.device_id}/{channel.name}", event, level.run, channel.severity,
                    details, begun_by=level.since)
                out.violation(level.open_violation)
            return
        level.run, level.since = [], None
        if channel.clears() and level.open_violation is not None:
            out.violation(clear_violation(level.open_violation, event, {"cleared_value": channel.value}))
            level.open_violation = None
