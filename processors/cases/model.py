"""What a case is: its state, owner and place, the violations it links, and its history.

Plain frozen dataclasses: the state machine (states.py) returns changed copies, and store/cases.py keeps
them in the relational database.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, Final

from core.case_settings import CasePriority, Verification

# The actor of the transitions the sensors make (an API key id otherwise).
SENSOR_ACTOR: Final = "sensor"
# The actor of the history entry a breached deadline's escalation makes.
SLA_ACTOR: Final = "sla"


class CaseState(StrEnum):
    REGISTERED = "registered"
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    REPORTED_DONE = "reported_done"
    VERIFIED = "verified"
    CLOSED = "closed"
    REOPENED = "reopened"
    RETURNED = "returned"
    SUSPENDED = "suspended"


class Resolution(StrEnum):
    """How a closed case was closed."""

    VERIFIED_BY_PERSON = "verified_by_person"
    VERIFIED_BY_SENSOR = "verified_by_sensor"
    # Its violations cleared before anyone worked on it (registered or returned, never dispatched since).
    RESOLVED_BY_ITSELF = "resolved_by_itself"


class CaseOrigin(StrEnum):
    VIOLATION = "violation"
    MANUAL = "manual"


@dataclass(frozen=True)
class Case:
    case_id: str
    type: str
    state: CaseState
    priority: CasePriority
    verify: Verification
    origin: CaseOrigin
    created_by: str
    created_time_ms: int
    updated_time_ms: int
    description: str = ""
    department: str | None = None
    assignee: str | None = None
    category: str | None = None
    # What de-duplicates violation cases: an open case of the same type at the same place takes a new
    # violation (the device id: a second overflow of the same bin joins the bin's open case).
    place: str | None = None
    grid: str | None = None
    district: str | None = None
    lat: float | None = None
    lon: float | None = None
    photo_url: str | None = None
    closed_time_ms: int | None = None
    resolution: Resolution | None = None
    # Suspended: the state it resumes to. Returned: the department that returned it (not dispatched again).
    suspended_from: CaseState | None = None
    returned_by: str | None = None
    # Linked violations not cleared yet; a sensor-verified case closes when this reaches 0.
    open_violations: int = 0
    # The SLA clock (docs/cases.md, "Working calendar and SLA"): None while a suspension runs, or when
    # the SLA policy has no terms for the case's priority.
    deadline_ms: int | None = None
    warning_ms: int | None = None
    # When the warning and the breach were signalled (claimed once, across replicas and restarts).
    warning_signalled_ms: int | None = None
    breach_signalled_ms: int | None = None
    # The supervisor department a breach escalated it to.
    escalated_to: str | None = None
    # Counts kept for evaluation (processors/cases/evaluation.py): times sent back for rework, times
    # returned by a department, time spent in finished suspensions, and the start of a running one.
    reworked: int = 0
    returns: int = 0
    suspended_ms: int = 0
    suspended_since_ms: int | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """One transition; `seq` orders a case's history (0 until the store gives it one)."""

    time_ms: int
    actor: str
    from_state: CaseState | None
    to_state: CaseState
    note: str = ""
    assignee: str | None = None
    department: str | None = None
    photo_url: str | None = None
    reason: str | None = None
    seq: int = 0


@dataclass(frozen=True)
class CaseViolation:
    violation_id: str
    joined_time_ms: int
    cleared_time_ms: int | None = None


_CASE_FIELDS: Final = frozenset(field.name for field in fields(Case))


def replaced(case: Case, **changes: Any) -> Case:
    """`dataclasses.replace(case, **changes)` at a fraction of its cost: a copy of the frozen case's fields
    with `changes`, without re-running the constructor over its 35 fields (the case intake replaces a
    case or two for every violation change)."""
    unknown = changes.keys() - _CASE_FIELDS
    if unknown:
        raise TypeError(f"Case has no field {sorted(unknown)[0]!r}")
    copy = object.__new__(Case)
    copy.__dict__.update(case.__dict__, **changes)
    return copy
