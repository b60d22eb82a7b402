"""Dispatch plans working on cases (docs/dispatch.md, "Cases"; docs/cases.md, "Dispatch plans").

- A planned stop carries its bin's open case: the `bin_overflow` case at the bin (the case's place is the
  bin's device id), else its `bin_near_full` case where a route opens those.
- A registered (or reopened) case whose stop is planned is dispatched to the stop's truck as soon as the
  plan is made or re-planned: the plan is the work order, and a case shows which truck is coming.
- A stop reported done walks its case on to reported_done (dispatched, accepted and in_progress on the
  way, as needed) with the report's photo; the sensors then verify and close it when the bin's overflow
  clears. Without a photo the walk stops at in_progress: the state machine's photo requirement stands.

Every transition is made by `dispatch:<truck id>`. A case a transition cannot move (closed by the sensor
meanwhile, suspended, returned) is left as it is and logged; the plan and the stop report never fail
because of a case.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from processors.cases.model import Case, CaseState
from processors.cases.service import CaseNotFound, CaseService
from processors.cases.states import TransitionRefused, TransitionRequest
from processors.dispatch.model import Plan, StopReport, StopStatus
from store.cases import CaseQuery

log = logging.getLogger(__name__)

# The case types a stop closes, the first preferred when a bin has both open.
CASE_TYPES: Final = ("bin_overflow", "bin_near_full")
OPEN_STATES: Final = tuple(state for state in CaseState if state is not CaseState.CLOSED)
_PAGE: Final = 1000
S = CaseState
# The states a stop done walks a case through, from the state it is in; reported_done last.
_WALKS: Final[dict[CaseState, tuple[CaseState, ...]]] = {
    S.REGISTERED: (S.DISPATCHED, S.ACCEPTED, S.IN_PROGRESS, S.REPORTED_DONE),
    S.DISPATCHED: (S.ACCEPTED, S.IN_PROGRESS, S.REPORTED_DONE),
    S.ACCEPTED: (S.IN_PROGRESS, S.REPORTED_DONE),
    S.REOPENED: (S.IN_PROGRESS, S.REPORTED_DONE),
    S.IN_PROGRESS: (S.REPORTED_DONE,),
}
# A planned stop dispatches its case from these states.
_DISPATCHABLE: Final = frozenset({S.REGISTERED, S.REOPENED})


def actor_of(truck_id: str) -> str:
    return f"dispatch:{truck_id}"


@dataclass(frozen=True)
class DispatchCases:
    cases: CaseService

    def open_cases(self) -> dict[str, str]:
        """Bin device id -> the id of its open case a stop would close."""
        found: dict[str, tuple[int, str]] = {}
        cursor = None
        while True:
            page = self.cases.store.query(CaseQuery(states=OPEN_STATES, types=CASE_TYPES, limit=_PAGE,
                                                    cursor=cursor))
            for case in page.items:
                rank = CASE_TYPES.index(case.type)
                if case.place is not None and (case.place not in found or rank < found[case.place][0]):
                    found[case.place] = (rank, case.case_id)
            cursor = page.next_cursor
            if cursor is None:
                return {place: case_id for place, (_, case_id) in found.items()}

    def dispatch_planned(self, plan: Plan) -> None:
        """Dispatch the registered (or reopened) cases of the plan's stops to their trucks."""
        for route in plan.routes:
            for stop in route.stops:
                if stop.case_id is None or stop.status is StopStatus.DONE:
                    continue
                case = self.cases.store.get(stop.case_id)
                if case is None or case.state not in _DISPATCHABLE:
                    continue
                note = f"planned on {plan.plan_id} for truck {route.truck_id}"
                self._move(case, TransitionRequest(to=S.DISPATCHED, assignee=route.truck_id, note=note),
                           route.truck_id)

    def stop_done(self, report: StopReport) -> Case | None:
        """Walk the stop's case on to reported_done (to in_progress without a photo); the case as left."""
        case_id = report.stop.case_id
        if case_id is None:
            return None
        case = self.cases.store.get(case_id)
        if case is None:
            return None
        walk = _WALKS.get(case.state, ())
        if not walk:
            log.info("case %s is %s: the stop at %s reported done on %s leaves it as it is", case.case_id,
                     case.state, report.device_id, report.plan_id)
            return case
        emptied = f"emptied by truck {report.truck_id} on plan {report.plan_id}"
        if report.photo_url is None:
            walk = walk[:-1]
            last_note = (f"{emptied}; reported without a photo: the sensor's verification closes it, or a "
                         "person reports it done with a photo")
        else:
            last_note = f"{emptied} (reported by {report.actor})"
        if report.note:
            last_note = f"{last_note}: {report.note}"
        for to in walk:
            last = to is walk[-1]
            request = TransitionRequest(
                to=to, note=last_note if last else emptied,
                assignee=report.truck_id if to in (S.DISPATCHED, S.ACCEPTED) else None,
                photo_url=report.photo_url if to is S.REPORTED_DONE else None)
            moved = self._move(case, request, report.truck_id)
            if moved is None:
                break
            case = moved
        return case

    def _move(self, case: Case, request: TransitionRequest, truck_id: str) -> Case | None:
        try:
            return self.cases.transition(case.case_id, request, actor_of(truck_id))
        except (TransitionRefused, CaseNotFound) as exc:  # moved or closed meanwhile (the sensor, a person)
            log.info("case %s not moved to %s by truck %s: %s", case.case_id, request.to, truck_id, exc)
            return None
