"""The SLA clock on cases: each case's deadline and warning time, kept as the case moves, and the events
of a warning time or deadline reached (docs/cases.md, "SLA on cases").

A case's clock counts from its registration, in the terms (allowance, clock, calendar, warning share) of
its priority, type and department (processors/cases/calendar.py). A suspension stops it: while suspended
the case has no deadline, and at resumption the deadline is computed again with the suspension left out.
Dispatching to another department keeps the clock running from registration (the citizen has waited all
along) but counts it in the new department's terms. Whenever the times move, a signal not yet given whose
new time lies ahead is armed again; one already given stays given, so a warning is not repeated because a
suspension moved the warning time a little.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from processors.cases.calendar import SlaPolicy, SlaStatus, Suspension, UnknownPriorityError
from processors.cases.model import Case, CaseState, replaced

log = logging.getLogger(__name__)

# How often the signal poller looks for warning times and deadlines reached.
POLL_INTERVAL_S = 2.0


class CaseEventKind(StrEnum):
    SLA_WARNING = "case_sla_warning"
    SLA_BREACH = "case_sla_breach"


@dataclass(frozen=True, slots=True)
class CaseSlaEvent:
    """A warning time or deadline an open case reached; `case` as it was once the signal was claimed."""

    kind: CaseEventKind
    case: Case
    # The warning time or the deadline reached.
    due_ms: int
    signalled_ms: int

    @property
    def idempotency_key(self) -> str:
        return f"{self.case.case_id}:{self.kind.value}:{self.due_ms}"

    def as_dict(self) -> dict[str, Any]:
        """The `case` object of the push message (docs/alerts.md, "Case SLA events")."""
        case = self.case
        return {
            "case_id": case.case_id, "type": case.type, "state": case.state.value,
            "priority": case.priority.value, "department": case.department, "assignee": case.assignee,
            "category": case.category, "grid": case.grid, "district": case.district,
            "location": {"lat": case.lat, "lon": case.lon} if case.lat is not None and case.lon is not None
            else None,
            "created_time_ms": case.created_time_ms, "warning_ms": case.warning_ms,
            "deadline_ms": case.deadline_ms, "due_ms": self.due_ms, "signalled_ms": self.signalled_ms,
            "escalated_to": case.escalated_to,
        }


class CaseClock:
    """Deadlines and warning times of cases under one SLA policy."""

    def __init__(self, policy: SlaPolicy) -> None:
        self.policy = policy

    def _times(self, case: Case, suspended: Sequence[Suspension]) -> tuple[int | None, int | None]:
        try:
            terms = self.policy.terms(case.priority.value, case_type=case.type, department=case.department)
        except UnknownPriorityError:
            return None, None  # a priority the policy gives no terms: no deadline
        return (terms.deadline_ms(case.created_time_ms, suspended),
                terms.warning_ms(case.created_time_ms, suspended))

    def started(self, case: Case) -> Case:
        """A new case with its deadline and warning time."""
        return self.timed(case, ())

    def timed(self, case: Case, suspended: Sequence[Suspension]) -> Case:
        """The case with the deadline and warning time of its terms, `suspended` left out."""
        deadline, warning = self._times(case, suspended)
        return replaced(case, deadline_ms=deadline, warning_ms=warning)

    def moved(self, before: Case, after: Case, now_ms: int,
              suspensions: Callable[[], list[Suspension]]) -> Case:
        """`after` (a transition of `before` made at `now_ms`) with its counts and SLA times brought up to
        date; `suspensions` gives the case's finished suspension intervals so far, from its history."""
        counts: dict[str, Any] = {}
        if after.state is CaseState.REOPENED and before.state is not CaseState.REOPENED:
            counts["reworked"] = before.reworked + 1
        if after.state is CaseState.RETURNED and before.state is not CaseState.RETURNED:
            counts["returns"] = before.returns + 1
        resumed = before.state is CaseState.SUSPENDED and after.state is not CaseState.SUSPENDED
        if after.state is CaseState.SUSPENDED and before.state is not CaseState.SUSPENDED:
            # The clock stands still: the deadline is unknown until the case resumes.
            return replaced(after, **counts, suspended_since_ms=now_ms, deadline_ms=None, warning_ms=None)
        if resumed:
            since = before.suspended_since_ms if before.suspended_since_ms is not None else now_ms
            counts["suspended_ms"] = before.suspended_ms + max(0, now_ms - since)
            counts["suspended_since_ms"] = None
        new_department = after.department is not None and after.department != before.department
        if not (resumed or new_department):
            return replaced(after, **counts)
        finished = suspensions()
        if resumed:
            finished = [*finished, (before.suspended_since_ms or now_ms, now_ms)]
        deadline, warning = self._times(replaced(after, **counts), finished)
        return replaced(
            after, **counts, deadline_ms=deadline, warning_ms=warning,
            # Armed again only for a time still ahead: a signal given stays given.
            warning_signalled_ms=None if warning is not None and warning > now_ms
            else after.warning_signalled_ms,
            breach_signalled_ms=None if deadline is not None and deadline >= now_ms
            else after.breach_signalled_ms)


def sla_status(case: Case, now_ms: int) -> SlaStatus | None:
    """within, warning or overdue at `now_ms`; None for a closed case, a suspended one or one without
    a deadline (a closed case's timeliness is `closed_time_ms` against `deadline_ms`)."""
    if case.state is CaseState.CLOSED or case.deadline_ms is None:
        return None
    if now_ms > case.deadline_ms:
        return SlaStatus.OVERDUE
    if case.warning_ms is not None and now_ms >= case.warning_ms:
        return SlaStatus.WARNING
    return SlaStatus.WITHIN


def suspensions_of(history: Sequence[tuple[int, str | None, str]]) -> list[Suspension]:
    """Finished and running suspension intervals from a case's (time_ms, from_state, to_state) history."""
    found: list[Suspension] = []
    since: int | None = None
    for time_ms, from_state, to_state in history:
        if from_state == CaseState.SUSPENDED.value and since is not None:
            found.append((since, time_ms))
            since = None
        if to_state == CaseState.SUSPENDED.value:
            since = time_ms
    if since is not None:
        found.append((since, None))
    return found


class SlaSignals:
    """A thread that, every `interval_s`, claims the warning times and deadlines reached (each once across
    replicas and restarts: the claim sets the case's flag and writes the event to the outbox in the same
    transaction), then delivers the outbox's unpublished events (`deliver` hands them to the feed and marks
    them published; those of a pass that crashed are delivered by the next one, here or on a replica)."""

    def __init__(self, claim: Callable[[], list[CaseSlaEvent]], deliver: Callable[[], list[CaseSlaEvent]],
                 *, interval_s: float = POLL_INTERVAL_S) -> None:
        self._claim = claim
        self._deliver = deliver
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="case-sla-signals", daemon=True)
        self._thread.start()

    def poll(self) -> list[CaseSlaEvent]:
        """One pass: claim what is due, then deliver what the outbox holds; the events delivered."""
        try:
            self._claim()
        except Exception:  # a store outage: nothing was claimed, the next pass tries again
            log.exception("case SLA signals: the claim failed")
        return self._deliver()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # the hand-off or the store failed: the events stay in the outbox
                log.exception("case SLA signals: the delivery failed")
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
