"""What happens to cases: violation changes open, join and close them; people create and move them.

Each batch of changes runs in one exclusive transaction of the case store, so two api replicas, or a
replay of the same violation change, never open a second case: a violation joins a case at most once
(its id is the key of the membership), and an open case of the same type at the same place takes a new
violation instead of a new case being opened (a second overflow of the same bin joins the bin's open
case). A batch reads what it touches up front and writes in bulk at its end (store.cases.CaseBatch), so
a chunk of the intake's queue costs a few round trips to the database, not a few per change.

When the last open violation of a `verify: sensor` case clears, the sensors verify and close it
(states.closed_by_sensor); a `verify: person` case only records that its violations cleared.

Every case carries its SLA clock (processors/cases/sla.py): a deadline and warning time set at
registration and kept as it moves; `claim_sla_signals` claims the warning times and deadlines reached,
each once, escalates a breached case to its supervisor department and writes each event to the store's
outbox in the same transaction; `publish_case_events` hands the outbox's unpublished events to the feed
and marks them published, so an event claimed just before a crash still goes out (at least once).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from core.case_settings import CasePriority, Verification
from core.metrics import Metrics
from core.models import Violation, ViolationStatus
from processors.cases.calendar import SlaPolicy
from processors.cases.model import SLA_ACTOR, Case, CaseOrigin, CaseState, HistoryEntry, replaced
from processors.cases.routing import CaseRouter, Routed
from processors.cases.sla import CaseClock, CaseEventKind, CaseSlaEvent, suspensions_of
from processors.cases.states import TransitionRefused, TransitionRequest, closed_by_sensor, transition
from store.cases import CaseBatch, CaseStore, CaseTransaction, new_case_id

log = logging.getLogger(__name__)

# The actor of a case opened by a routed violation.
ROUTING_ACTOR: Final = "routing"
# How long a replica holds the outbox events it took to publish: past it, a replica that died before
# marking them published has them published by another (the at-least-once duplicate).
EVENT_LEASE_MS: Final = 60_000


class CaseNotFound(LookupError):
    pass


class ViolationInAnotherCase(ValueError):
    """A violation asked to join a case belongs to another one already (a violation joins one case)."""

    def __init__(self, violation_id: str, case_id: str) -> None:
        super().__init__(f"violation {violation_id} belongs to case {case_id} already")
        self.violation_id = violation_id
        self.case_id = case_id


@dataclass(frozen=True)
class NewCase:
    """A case made by hand; it has no violations, so a person verifies it."""

    type: str
    description: str
    department: str | None = None
    category: str | None = None
    priority: CasePriority = CasePriority.NORMAL
    grid: str | None = None
    district: str | None = None
    lat: float | None = None
    lon: float | None = None
    photo_url: str | None = None


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class CaseService:
    def __init__(self, store: CaseStore, router: CaseRouter, *,
                 now_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.store = store
        self.router = router
        self.now_ms = now_ms
        self.settings = router.settings
        self.clock = CaseClock(SlaPolicy(router.settings.sla))
        # Whoever counts in the process's /metrics (the intake), told once the API has them.
        self.metrics_hooks: list[Callable[[Metrics], None]] = []
        # Who holds the outbox events this service publishes (one per process: a replica).
        self.publisher_id = f"p_{secrets.token_hex(6)}"

    def report_to(self, metrics: Metrics) -> None:
        """Count in `metrics`, the registry served at the process's /metrics."""
        for hook in self.metrics_hooks:
            hook(metrics)

    # Violation changes

    def violation_changes(self, violations: Sequence[Violation]) -> None:
        """Apply the changes in order, all in one transaction (all or none of them: the intake applies a
        drained chunk of its queue at once, and one change at a time when a chunk is refused); a change
        seen before changes nothing."""
        changes: list[tuple[Violation, Routed | None]] = []
        for violation in violations:
            if violation.status is ViolationStatus.OPEN:
                routed = self.router.route(violation)
                if routed is not None:
                    changes.append((violation, routed))
            else:
                changes.append((violation, None))
        if not changes:
            return
        closed: list[Case] = []
        with self.store.violation_batch([v.violation_id for v, _ in changes],
                                        [(v.type, r.place) for v, r in changes if r is not None]) as tx:
            for violation, routed in changes:
                if routed is not None:
                    self._opened(tx, violation, routed)
                else:
                    case = self._cleared(tx, violation)
                    if case is not None:
                        closed.append(case)
        for case in closed:
            log.debug("case %s closed: %s", case.case_id, case.resolution)

    def _event_time(self, violation: Violation) -> int:
        """When a violation change happened, for the case it touches: the event time the rule decided it at
        (opened: `detected_time_ms`; cleared: `updated_time_ms`), so that a case registered from a change
        applied late (a restart's reconciliation, a reader that fell behind, a replay) carries the same
        times as one applied at once. Never later than now: a device clock running ahead does not move a
        case into the future."""
        decided = violation.updated_time_ms
        if violation.status is ViolationStatus.OPEN and violation.detected_time_ms is not None:
            decided = violation.detected_time_ms
        return min(decided, self.now_ms())

    def _opened(self, tx: CaseBatch, violation: Violation, routed: Routed) -> None:
        if tx.is_linked(violation.violation_id):
            return
        now = self._event_time(violation)
        case = tx.open_case_at(violation.type, routed.place)
        if case is not None:
            # A case's times never go back: a violation that happened before the case's last change joins
            # at that change's time.
            now = max(now, case.updated_time_ms)
            tx.link_violation(case.case_id, violation.violation_id, now)
            tx.update(replaced(case, open_violations=case.open_violations + 1, updated_time_ms=now), [])
            log.debug("violation %s joined case %s", violation.violation_id, case.case_id)
            return
        case = self.clock.started(_case_of(violation, routed, now))
        tx.insert(case, [HistoryEntry(
            time_ms=now, actor=ROUTING_ACTOR, from_state=None, to_state=CaseState.REGISTERED,
            note=f"opened by violation {violation.violation_id}", department=routed.department)])
        tx.link_violation(case.case_id, violation.violation_id, now)
        log.debug("violation %s opened case %s for %s", violation.violation_id, case.case_id,
                  routed.department)

    def _cleared(self, tx: CaseBatch, violation: Violation) -> Case | None:
        """The case, when the clearing closed it."""
        cleared = self._event_time(violation)
        case_id = tx.clear_violation(violation.violation_id, cleared)
        if case_id is None:
            return None
        before = tx.get(case_id)
        if before is None:  # the membership outlived its case: nothing to close
            return None
        # The sensors verify at the clearing's time, unless a person moved the case after it (the bin was
        # emptied before the dispatch reached the crew): then at once, never before the last transition.
        now = max(cleared, before.updated_time_ms)
        case = replaced(before, open_violations=max(0, before.open_violations - 1), updated_time_ms=now)
        entries: list[HistoryEntry] = []
        if case.open_violations == 0 and case.verify is Verification.SENSOR:
            case, entries = closed_by_sensor(case, now)
            case = self.clock.moved(before, case, now, lambda: _finished_suspensions(tx, case_id))
        tx.update(case, entries)
        return case if entries else None

    def reconcile(self, open_violations: Iterable[Violation], stored: Callable[[str], Violation | None],
                  chunk: int = 500) -> tuple[int, int]:
        """The changes a restart may find missing, re-derived from the violation store (which holds every
        change before the intake is handed it): those queued when `citywatch up` was killed, or dropped by
        a full queue. Each violation still open is applied as an opening (one in a case already changes
        nothing), and each membership not cleared whose violation the store has cleared as its clearing.
        Run before the processor publishes again, so that no live change of the same violation comes
        first. The violations newly linked to cases, and the clearings applied."""
        linked_before = self.store.linked_violations()
        pending: list[Violation] = []
        for violation in open_violations:
            if violation.status is ViolationStatus.OPEN and self.router.may_take(violation.type):
                pending.append(violation)
            if len(pending) >= chunk:
                self.violation_changes(pending)
                pending = []
        if pending:
            self.violation_changes(pending)
        cleared = [violation for violation in map(stored, self.store.uncleared_violation_ids())
                   if violation is not None and violation.status is not ViolationStatus.OPEN]
        for start in range(0, len(cleared), chunk):
            self.violation_changes(cleared[start:start + chunk])
        return self.store.linked_violations() - linked_before, len(cleared)

    # People

    def create(self, new: NewCase, actor: str, violations: Sequence[Violation] = (), *,
               along: Callable[[CaseTransaction, Case], None] | None = None) -> Case:
        """A case made by hand, linking `violations` (existing ones, looked up by the caller): a cleared
        one joins as cleared, the open ones are the case's open violations. ViolationInAnotherCase, and no
        case made, when one belongs to a case already. `along` writes what belongs with the case (an
        Open311 request's record) in the same transaction: both are stored, or neither."""
        now = self.now_ms()
        still_open = sum(1 for violation in violations if violation.status is ViolationStatus.OPEN)
        case = self.clock.started(Case(
                    case_id=new_case_id(), type=new.type, state=CaseState.REGISTERED, priority=new.priority,
                    verify=Verification.PERSON, origin=CaseOrigin.MANUAL, created_by=actor,
                    created_time_ms=now, updated_time_ms=now, description=new.description,
                    department=new.department, category=new.category, grid=new.grid, district=new.district,
                    lat=new.lat, lon=new.lon, photo_url=new.photo_url, open_violations=still_open))
        with self.store.transaction() as tx:
            for violation in violations:
                owner = tx.case_of(violation.violation_id)
                if owner is not None:
                    raise ViolationInAnotherCase(violation.violation_id, owner)
            tx.insert(case, [HistoryEntry(time_ms=now, actor=actor, from_state=None,
                                          to_state=CaseState.REGISTERED, note=new.description,
                                          department=new.department, photo_url=new.photo_url)])
            for violation in violations:
                tx.link_violation(case.case_id, violation.violation_id, now)
                if violation.status is not ViolationStatus.OPEN:
                    tx.clear_violation(violation.violation_id, now)
            if along is not None:
                along(tx, case)
        return case

    def routed(self, new: NewCase, tags: Mapping[str, str]) -> NewCase:
        """A case made for a report (a citizen's, through Open311) with the department, category and
        priority `cases.routes` give a violation of its type with these place tags now; the tags' own
        `department` (geo.departments) when no route takes it."""
        route = self.router.route_facts(new.type, tags, self.now_ms())
        placed = dataclasses.replace(new, grid=tags.get("grid", new.grid),
                                     district=tags.get("district", new.district))
        if route is None:
            return dataclasses.replace(placed, department=tags.get("department", new.department))
        return dataclasses.replace(placed, department=route.department, category=route.category,
                                   priority=route.priority)

    def transition(self, case_id: str, request: TransitionRequest, actor: str) -> Case:
        """The case after the transition; CaseNotFound, or states.TransitionRefused when not allowed."""
        now = self.now_ms()
        with self.store.transaction() as tx:
            case = _existing(tx, case_id)
            updated, entry = transition(case, request, actor, now)
            if case.state is CaseState.CLOSED and case.place is not None:
                # One open case per type and place: a newer one there already holds the recurrence.
                newer = tx.open_case_at(case.type, case.place)
                if newer is not None:
                    raise TransitionRefused(
                        case, request.to, f"case {newer.case_id} is open for {case.type} at {case.place}: "
                        f"the problem's recurrence is in that case, so {case.case_id} stays closed")
            updated = self.clock.moved(case, updated, now, lambda: _finished_suspensions(tx, case_id))
            tx.update(updated, [entry])
        return updated

    # The SLA clock

    def claim_sla_signals(self, limit: int = 500) -> list[CaseSlaEvent]:
        """The warning times and deadlines reached by now, each claimed once (the flag is set in this
        transaction, so another replica or a later pass finds it given); a breach escalates the case. The
        events are written to the outbox in the same transaction: `publish_case_events` sends them."""
        now = self.now_ms()
        events: list[CaseSlaEvent] = []
        with self.store.transaction() as tx:
            for case in tx.sla_due(now, limit):
                updated = case
                if case.warning_signalled_ms is None and case.warning_ms is not None \
                        and case.warning_ms <= now:
                    updated = dataclasses.replace(updated, warning_signalled_ms=now)
                    events.append(CaseSlaEvent(CaseEventKind.SLA_WARNING, updated, case.warning_ms, now))
                entries: list[HistoryEntry] = []
                if case.breach_signalled_ms is None and case.deadline_ms is not None \
                        and case.deadline_ms < now:
                    updated, entries = self._escalated(
                        dataclasses.replace(updated, breach_signalled_ms=now), now)
                    events.append(CaseSlaEvent(CaseEventKind.SLA_BREACH, updated, case.deadline_ms, now))
                tx.update(updated, entries)
            for event in events:
                tx.add_event(event.kind.value, event.case, event.due_ms, event.signalled_ms)
        for event in events:
            log.info("case %s: %s (due %d)", event.case.case_id, event.kind, event.due_ms)
        return events

    def publish_case_events(self, publish: Callable[[list[CaseSlaEvent]], None], *, limit: int = 500,
                            lease_ms: int = EVENT_LEASE_MS) -> list[CaseSlaEvent]:
        """Hand the outbox's unpublished events to `publish`, oldest first, and mark them published; the
        events handed. Each is leased to this service first, so another replica does not publish it too;
        when `publish` raises, the lease is let go and a later pass tries again."""
        stored = self.store.lease_events(self.publisher_id, self.now_ms(), lease_ms, limit)
        if not stored:
            return []
        events = [CaseSlaEvent(CaseEventKind(row.kind), row.case, row.due_ms, row.signalled_ms)
                  for row in stored]
        seqs = [row.seq for row in stored]
        try:
            publish(events)
        except BaseException:
            self.store.release_events(self.publisher_id, seqs)
            raise
        self.store.events_published(self.publisher_id, seqs, self.now_ms())
        return events

    def _escalated(self, case: Case, now: int) -> tuple[Case, list[HistoryEntry]]:
        supervisor = self.settings.supervisor_of(case.department)
        if supervisor is None:
            return case, []
        reassign = self.settings.escalation.reassign
        escalated = dataclasses.replace(case, escalated_to=supervisor, updated_time_ms=now,
                                        department=supervisor if reassign else case.department)
        keeps = "now its department" if reassign else f"{case.department or 'no department'} keeps it"
        note = f"deadline passed: escalated to {supervisor} ({keeps})"
        return escalated, [HistoryEntry(time_ms=now, actor=SLA_ACTOR, from_state=case.state,
                                        to_state=case.state, note=note, department=supervisor,
                                        reason="sla_breach")]

    def start_clocks(self, limit: int = 10_000) -> int:
        """Give a deadline to open cases that have none although they are not suspended (cases from before
        the SLA clock, schema version 1); how many got one."""
        started = 0
        now = self.now_ms()
        with self.store.transaction() as tx:
            for case in tx.without_deadline(limit):
                timed = self.clock.timed(case, _finished_suspensions(tx, case.case_id))
                if timed.deadline_ms is None:
                    continue
                # No signal for a time that passed before the clock ran: an upgrade sends no backlog.
                timed = dataclasses.replace(
                    timed, warning_signalled_ms=now if (timed.warning_ms or 0) <= now else None,
                    breach_signalled_ms=now if timed.deadline_ms < now else None)
                tx.update(timed, [])
                started += 1
        return started


def _finished_suspensions(tx: CaseTransaction | CaseBatch, case_id: str) -> list[tuple[int, int | None]]:
    return [(start, end) for start, end in suspensions_of(tx.state_changes(case_id)) if end is not None]


def _existing(tx: CaseTransaction, case_id: str) -> Case:
    case = tx.get(case_id)
    if case is None:
        raise CaseNotFound(f"no case {case_id!r}")
    return case


def _case_of(violation: Violation, routed: Routed, now_ms: int) -> Case:
    tags = violation.tags
    location = violation.location
    return Case(case_id=new_case_id(), type=violation.type, state=CaseState.REGISTERED,
                priority=routed.priority, verify=routed.verify, origin=CaseOrigin.VIOLATION,
                created_by=ROUTING_ACTOR, created_time_ms=now_ms, updated_time_ms=now_ms,
                description=f"{violation.type} at {violation.device_id}", department=routed.department,
                category=routed.category, place=routed.place, grid=tags.get("grid"),
                district=tags.get("district"), lat=location.lat if location is not None else None,
                lon=location.lon if location is not None else None, open_violations=1)
