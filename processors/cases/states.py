"""The case state machine: which transitions a person may make, what each needs, and the sensors' closure.

    registered -> dispatched -> accepted -> in_progress -> reported_done -> verified -> closed
                                                                 |             |
                                                                 +-> reopened <+  (rework: dispatched,
                                                                                   accepted or in_progress)
    dispatched, accepted -> returned (wrong department) -> dispatched to another department
    any open state but reported_done and verified -> suspended (with a reason) -> back where it was
    closed -> reopened (the problem recurred: a person with a note; rework, as a failed verification is)

A refused transition names the case's state and the transitions it allows (`TransitionRefused`); the
API answers it as a problem. The sensors close a case apart from these rules (`closed_by_sensor`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from processors.cases.model import SENSOR_ACTOR, Case, CaseState, HistoryEntry, Resolution, replaced

S = CaseState
ALLOWED: Final[dict[CaseState, tuple[CaseState, ...]]] = {
    S.REGISTERED: (S.DISPATCHED, S.SUSPENDED),
    S.DISPATCHED: (S.ACCEPTED, S.RETURNED, S.SUSPENDED),
    S.ACCEPTED: (S.IN_PROGRESS, S.RETURNED, S.SUSPENDED),
    S.IN_PROGRESS: (S.REPORTED_DONE, S.SUSPENDED),
    S.REPORTED_DONE: (S.VERIFIED, S.REOPENED),
    S.VERIFIED: (S.CLOSED, S.REOPENED),
    S.CLOSED: (S.REOPENED,),
    S.REOPENED: (S.DISPATCHED, S.ACCEPTED, S.IN_PROGRESS, S.SUSPENDED),
    S.RETURNED: (S.DISPATCHED, S.SUSPENDED),
    S.SUSPENDED: (),  # back to the state it was suspended in: allowed_from()
}
# Nobody has worked on a case in these states: if its violations clear, it resolved by itself.
UNWORKED: Final = frozenset({S.REGISTERED, S.RETURNED})


class TransitionRefused(Exception):
    """A transition the case's state does not allow (`field` None), or one missing what it needs (`field`
    names the request field)."""

    def __init__(self, case: Case, to: CaseState, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.state = case.state
        self.to = to
        self.allowed = allowed_from(case)
        self.detail = detail
        self.field = field


@dataclass(frozen=True)
class TransitionRequest:
    to: CaseState
    note: str = ""
    assignee: str | None = None
    department: str | None = None
    photo_url: str | None = None
    reason: str | None = None


def allowed_from(case: Case) -> tuple[CaseState, ...]:
    if case.state is S.SUSPENDED:
        return (case.suspended_from,) if case.suspended_from is not None else ()
    return ALLOWED[case.state]


def transition(case: Case, request: TransitionRequest, actor: str, now_ms: int) -> tuple[Case, HistoryEntry]:
    """The case after a person's transition, and its history entry; TransitionRefused when not allowed."""
    to = request.to
    allowed = allowed_from(case)
    if to not in allowed:
        names = ", ".join(allowed) if allowed else "none (the case is closed)"
        raise TransitionRefused(case, to, f"case {case.case_id} is {case.state}: it cannot go to {to}; "
                                f"allowed from {case.state}: {names}")
    changes = _changes(case, request)
    changes["state"] = to
    changes["updated_time_ms"] = now_ms
    if case.state is S.SUSPENDED:
        changes["suspended_from"] = None
    if to is S.CLOSED:
        changes["closed_time_ms"] = now_ms
    updated = replaced(case, **changes)
    entry = HistoryEntry(time_ms=now_ms, actor=actor, from_state=case.state, to_state=to, note=request.note,
                         assignee=updated.assignee if to is S.DISPATCHED else request.assignee,
                         department=updated.department if to is S.DISPATCHED else request.department,
                         photo_url=request.photo_url, reason=request.reason)
    return updated, entry


def _require(case: Case, request: TransitionRequest, field: str, why: str) -> None:
    if not getattr(request, field):
        raise TransitionRefused(case, request.to, f"`{field}` is required to go to {request.to}: {why}",
                                field=field)


def _changes(case: Case, request: TransitionRequest) -> dict[str, Any]:
    """What the transition changes besides the state, after checking it has what it needs."""
    to = request.to
    if request.department is not None and to is not S.DISPATCHED:
        # It would be kept in the history while the case stays with its department: refused, not ignored.
        stays = case.department or "no department"
        raise TransitionRefused(case, to, f"`department` only goes with dispatched (the case stays with "
                                f"{stays} when it goes to {to})", field="department")
    if to is S.DISPATCHED:
        if case.state is S.RETURNED:
            _require(case, request, "department", f"{case.returned_by} returned it as not theirs")
            if request.department == case.returned_by:
                raise TransitionRefused(case, to, f"{case.returned_by} returned this case: dispatch it to "
                                        "another department", field="department")
        department = request.department or case.department
        if department is None and request.assignee is None:
            raise TransitionRefused(case, to, "`department` or `assignee` is required to go to dispatched: "
                                    "the case has no department yet", field="department")
        changed_department = request.department is not None and request.department != case.department
        assignee = request.assignee if request.assignee is not None else (
            None if changed_department else case.assignee)
        return {"department": department, "assignee": assignee, "returned_by": None}
    if to is S.ACCEPTED:
        return {"assignee": request.assignee} if request.assignee is not None else {}
    if to is S.REPORTED_DONE:
        _require(case, request, "note", "say what was done")
        _require(case, request, "photo_url", "a photo of the result")
        return {"photo_url": request.photo_url}
    if to is S.RETURNED:
        _require(case, request, "reason", "say why it is not this department's")
        return {"returned_by": case.department, "department": None, "assignee": None}
    if to is S.SUSPENDED:
        _require(case, request, "reason", "say what it waits for")
        return {"suspended_from": case.state}
    if to is S.REOPENED:
        _require(case, request, "note", "say what needs rework")
        # A closed case is open again: its closing and how it was closed no longer hold.
        return {"closed_time_ms": None, "resolution": None} if case.state is S.CLOSED else {}
    if to is S.CLOSED:
        return {"resolution": Resolution.VERIFIED_BY_PERSON}
    return {}


def closed_by_sensor(case: Case, now_ms: int) -> tuple[Case, list[HistoryEntry]]:
    """The case once its last violation cleared (for `verify: sensor`): verified and closed by the
    sensors, or, if nobody had worked on it, closed as resolved by itself. A closed case is unchanged."""
    if case.state is S.CLOSED:
        return case, []
    if case.state in UNWORKED:
        closed = replaced(case, state=S.CLOSED, updated_time_ms=now_ms, closed_time_ms=now_ms,
                                     resolution=Resolution.RESOLVED_BY_ITSELF, suspended_from=None)
        return closed, [HistoryEntry(time_ms=now_ms, actor=SENSOR_ACTOR, from_state=case.state,
                                     to_state=S.CLOSED, note="its violations cleared before anyone worked "
                                     "on it: resolved by itself")]
    entries = []
    if case.state is not S.VERIFIED:
        entries.append(HistoryEntry(time_ms=now_ms, actor=SENSOR_ACTOR, from_state=case.state,
                                    to_state=S.VERIFIED, note="its violations cleared: verified by the "
                                    "sensors"))
    entries.append(HistoryEntry(time_ms=now_ms, actor=SENSOR_ACTOR, from_state=S.VERIFIED, to_state=S.CLOSED,
                                note="closed on the sensors' verification"))
    # A person who verified it already keeps the credit; the sensors only close it.
    resolution = Resolution.VERIFIED_BY_PERSON if case.state is S.VERIFIED else Resolution.VERIFIED_BY_SENSOR
    closed = replaced(case, state=S.CLOSED, updated_time_ms=now_ms, closed_time_ms=now_ms,
                                 resolution=resolution, suspended_from=None)
    return closed, entries
