"""The canonical event and violation models every component speaks.

Times are integer epoch milliseconds in UTC (`*_ms`); event time comes from the device, ingest time from
citywatch. The structs are msgspec structs: they are decoded, validated and encoded on the hot path (the
bus, the store), and are immutable so a rule can never change an event another rule is looking at.
See docs/model.md for the user-facing description.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

import msgspec


class Location(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """WGS84 position in decimal degrees."""

    lat: float
    lon: float

    def __post_init__(self) -> None:
        if not -90.0 <= self.lat <= 90.0:
            raise ValueError(f"lat {self.lat} is outside -90..90")
        if not -180.0 <= self.lon <= 180.0:
            raise ValueError(f"lon {self.lon} is outside -180..180")


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One normalised observation from one device.

    `kind` names what was observed (`bin`, `air`, `track`, ...: see docs/model.md); `attributes` holds the
    measured values with units in their names (`fill_pct`, `temperature_c`). `event_id` is stable for the
    same observation however often it is delivered, so duplicates can be dropped anywhere downstream.
    """

    event_id: str
    device_id: str
    kind: str
    event_time_ms: int
    ingest_time_ms: int
    attributes: dict[str, Any] = {}
    location: Location | None = None
    # Where the event came from (codec name), for support and dead-letter triage.
    source: str = "native"
    # Enrichment from the device registry and grids (grid, district, department, zone ...).
    tags: dict[str, str] = {}


class ViolationStatus(StrEnum):
    OPEN = "open"
    CLEARED = "cleared"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    """What a violation was judged on: enough for an officer or a dispatcher to check it."""

    event_ids: list[str]
    # Rule-specific facts: the readings, thresholds and zone or phase the judgement used.
    details: dict[str, Any] = {}
    snapshot_url: str | None = None
    plate: str | None = None


class Violation(msgspec.Struct, frozen=True, kw_only=True):
    """A rule's judgement over time: opened once, later cleared; both states share one id.

    A status change is a new Violation value with the same `violation_id`: stores upsert by id, so
    replaying the same input can never create a second violation.
    """

    violation_id: str
    type: str
    severity: Severity
    device_id: str
    start_time_ms: int
    status: ViolationStatus = ViolationStatus.OPEN
    end_time_ms: int | None = None
    location: Location | None = None
    evidence: Evidence
    tags: dict[str, str] = {}
    # Event time of the latest state change (open or clear): orders status changes of one violation.
    updated_time_ms: int
    # Event time at which the rule opened it: the open state's `updated_time_ms`, kept through updates
    # and clearing, so when it was raised is not lost when it clears. Rules leave it unset; the emitter
    # sets it on the first open state of an id (processors/rule.py `Emitter.violation`). None only for
    # violations stored before citywatch kept it.
    detected_time_ms: int | None = None


class LifecycleChange(StrEnum):
    """One entry of a violation's history: a rule's state change or a person's action."""

    # By the rule, at event time.
    OPENED = "opened"
    UPDATED = "updated"  # re-issued while open (e.g. a higher speeding band)
    CLEARED = "cleared"
    # By a person through the API, at wall time.
    ACKNOWLEDGED = "acknowledged"
    ASSIGNED = "assigned"
    DISMISSED = "dismissed"
    NOTED = "noted"


class LifecycleEntry(msgspec.Struct, frozen=True, kw_only=True):
    """What happened to a violation, when and by whom. A rule's change is at event time with actor
    `rule:<violation type>`; a person's action at wall time with the API key as actor."""

    violation_id: str
    change: LifecycleChange
    time_ms: int
    actor: str
    # For a person's action: the name of the API key it was taken with (`actor` is `key:<key id>`).
    actor_name: str | None = None
    note: str | None = None
    # For `assigned`: the department or person it was assigned to.
    assignee: str | None = None


# At one time: opened, updated, cleared, then people's actions in the order they were taken.
_CHANGE_ORDER: dict[LifecycleChange, int] = {
    LifecycleChange.OPENED: 0, LifecycleChange.UPDATED: 1, LifecycleChange.CLEARED: 2}


def history_order(entries: list[LifecycleEntry]) -> list[LifecycleEntry]:
    """Oldest first by `time_ms`; at the same time the rule's changes in lifecycle order (opened before
    cleared), then people's actions in their given order (the sort is stable)."""
    return sorted(entries, key=lambda entry: (entry.time_ms, _CHANGE_ORDER.get(entry.change, 3)))


def rule_change(violation: Violation) -> LifecycleEntry:
    """The history entry a rule's state of a violation stands for, from that state alone (so a store can
    keep it idempotently by (violation id, change, time) while upserting the violation): cleared, opened
    (the state at which it was detected), or else updated."""
    if violation.status is ViolationStatus.CLEARED:
        change = LifecycleChange.CLEARED
    elif violation.detected_time_ms is None or violation.updated_time_ms <= violation.detected_time_ms:
        change = LifecycleChange.OPENED
    else:
        change = LifecycleChange.UPDATED
    return LifecycleEntry(violation_id=violation.violation_id, change=change,
                          time_ms=violation.updated_time_ms, actor=f"rule:{violation.type}")


class Prediction(msgspec.Struct, frozen=True, kw_only=True):
    """A rule's forecast for one device, e.g. when a bin will be full. Newer replaces older per
    (type, device_id): a store keeps the newest by `computed_time_ms`."""

    type: str
    device_id: str
    # Event time of the newest reading the forecast was computed from.
    computed_time_ms: int
    # When the forecast event happens (event time); None: no trend to forecast from (e.g. just emptied).
    predicted_time_ms: int | None
    # The latest measured value the forecast starts from (e.g. fill_pct).
    value: float
    details: dict[str, Any] = {}
    location: Location | None = None
    tags: dict[str, str] = {}


class ExposureTotal(msgspec.Struct, frozen=True, kw_only=True):
    """How much one device observed of what a rule judges, on one local day: a denominator of a rate.

    `value` is the day's running total, not an increment: the processor emits the new total whenever it
    changes and stores keep the latest per (day, device_id, counter), so a replay or a redelivery writes
    the same totals again and never counts twice. Counter names and meanings: core/exposures.py.
    """

    # The calendar day in the city's time zone, "YYYY-MM-DD" (sorts as text in time order).
    day: str
    device_id: str
    counter: str
    value: float
    # Where the device was when counted, from the registry: grid, district, intersection (when known).
    tags: dict[str, str] = {}


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """Input that could not be accepted, kept with the reason so that it can be fixed and replayed.

    `dead_letter_id` is derived from everything else (`dead_letter_id()`) when the dead letter is made or
    decoded without one, so the same rejection replayed from Kafka has the same id and the stores keep it
    once. Build a changed copy with the constructor, not `msgspec.structs.replace`, which keeps the old id.
    """

    reason: str
    detail: str
    topic: str
    payload: bytes
    received_time_ms: int
    source: str = ""
    dead_letter_id: str = ""

    def __post_init__(self) -> None:
        if not self.dead_letter_id:
            # Frozen struct: this is the one place the id is set, before anyone else sees the value.
            msgspec.structs.force_setattr(self, "dead_letter_id", dead_letter_id(
                self.source, self.topic, self.reason, self.detail, self.received_time_ms, self.payload))


def stable_id(*parts: object) -> str:
    """A deterministic 128-bit hex id from the parts: the same inputs give the same id on any machine."""
    return stable_text_id("\x1f".join(str(part) for part in parts))


def stable_text_id(text: str) -> str:
    """`stable_id` of parts already joined with "\x1f" (one part is its own text): the same id, without
    the joining, for callers that make one per event."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def dead_letter_id(source: str, topic: str, reason: str, detail: str, received_time_ms: int,
                   payload: bytes) -> str:
    """A dead letter's deterministic 128-bit hex id. `detail` is part of it: one message can be rejected
    for several items (a batch payload), each with the same payload and time but its own detail. The
    payload is hashed as bytes (not through `str`), as it may be large or not text."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update("\x1f".join((source, topic, reason, detail, str(received_time_ms))).encode())
    digest.update(b"\x1f")
    digest.update(payload)
    return digest.hexdigest()
