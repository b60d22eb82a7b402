"""The case state machine: the loop a person walks, what each step needs, and the sensors' closure."""

from __future__ import annotations

import dataclasses

import pytest

from core.case_settings import CasePriority, Verification
from processors.cases.model import SENSOR_ACTOR, Case, CaseOrigin, CaseState, Resolution, replaced
from processors.cases.states import (
    TransitionRefused,
    TransitionRequest,
    allowed_from,
    closed_by_sensor,
    transition,
)

S = CaseState
T0 = 1_764_000_000_000


def case(state: CaseState = S.REGISTERED, **changes: object) -> Case:
    base = Case(case_id="c_1", type="bin_overflow", state=S.REGISTERED, priority=CasePriority.HIGH,
                verify=Verification.SENSOR, origin=CaseOrigin.VIOLATION, created_by="routing",
                created_time_ms=T0, updated_time_ms=T0, department="sanitation", place="bin-1",
                open_violations=1)
    return dataclasses.replace(base, state=state, **changes)  # type: ignore[arg-type]


def move(current: Case, to: CaseState, **fields: str) -> Case:
    return transition(current, TransitionRequest(to=to, **fields), "k1", T0 + 1000)[0]


def test_the_whole_loop_by_hand_ends_closed_and_verified_by_a_person() -> None:
    c = case()
    c = move(c, S.DISPATCHED, assignee="wang")
    assert (c.state, c.department, c.assignee) == (S.DISPATCHED, "sanitation", "wang")
    c = move(c, S.ACCEPTED)
    c = move(c, S.IN_PROGRESS)
    c = move(c, S.REPORTED_DONE, note="emptied", photo_url="https://photos.example/1.jpg")
    assert c.photo_url == "https://photos.example/1.jpg"
    c = move(c, S.VERIFIED)
    updated, entry = transition(c, TransitionRequest(to=S.CLOSED, note="ok"), "k2", T0 + 5000)
    assert (updated.state, updated.resolution, updated.closed_time_ms) == (
        S.CLOSED, Resolution.VERIFIED_BY_PERSON, T0 + 5000)
    assert (entry.actor, entry.from_state, entry.to_state, entry.note) == ("k2", S.VERIFIED, S.CLOSED, "ok")
    assert allowed_from(updated) == (S.REOPENED,)


def test_an_illegal_transition_names_the_state_and_what_it_allows() -> None:
    with pytest.raises(TransitionRefused) as refused:
        move(case(S.DISPATCHED), S.CLOSED)
    assert refused.value.field is None
    assert (refused.value.state, refused.value.allowed) == (
        S.DISPATCHED, (S.ACCEPTED, S.RETURNED, S.SUSPENDED))
    assert str(refused.value) == ("case c_1 is dispatched: it cannot go to closed; allowed from dispatched: "
                                  "accepted, returned, suspended")


def test_a_closed_case_can_only_be_reopened_with_a_note_and_is_open_again() -> None:
    closed = case(S.CLOSED, resolution=Resolution.VERIFIED_BY_SENSOR, closed_time_ms=T0 + 500,
                  open_violations=0)
    assert allowed_from(closed) == (S.REOPENED,)
    with pytest.raises(TransitionRefused) as refused:
        move(closed, S.DISPATCHED)
    assert str(refused.value) == ("case c_1 is closed: it cannot go to dispatched; allowed from closed: "
                                  "reopened")
    with pytest.raises(TransitionRefused) as missing:
        move(closed, S.REOPENED)
    assert missing.value.field == "note"
    reopened, entry = transition(closed, TransitionRequest(to=S.REOPENED, note="overflowing again"), "k3",
                                 T0 + 9000)
    assert (reopened.state, reopened.closed_time_ms, reopened.resolution) == (S.REOPENED, None, None)
    assert (entry.actor, entry.from_state, entry.to_state, entry.note) == (
        "k3", S.CLOSED, S.REOPENED, "overflowing again")
    assert allowed_from(reopened) == (S.DISPATCHED, S.ACCEPTED, S.IN_PROGRESS, S.SUSPENDED)


@pytest.mark.parametrize(("state", "to", "field"), [
    (S.IN_PROGRESS, S.REPORTED_DONE, "note"),
    (S.DISPATCHED, S.RETURNED, "reason"),
    (S.ACCEPTED, S.SUSPENDED, "reason"),
    (S.REPORTED_DONE, S.REOPENED, "note"),
])
def test_a_transition_missing_what_it_needs_names_the_field(state: CaseState, to: CaseState,
                                                            field: str) -> None:
    with pytest.raises(TransitionRefused) as refused:
        move(case(state), to)
    assert refused.value.field == field


def test_reported_done_needs_a_photo_as_well_as_a_note() -> None:
    with pytest.raises(TransitionRefused) as refused:
        move(case(S.IN_PROGRESS), S.REPORTED_DONE, note="done")
    assert refused.value.field == "photo_url"


def test_a_returned_case_goes_to_another_department_only() -> None:
    returned = move(case(S.DISPATCHED, assignee="wang"), S.RETURNED, reason="this is a park bin")
    assert (returned.state, returned.department, returned.assignee, returned.returned_by) == (
        S.RETURNED, None, None, "sanitation")
    with pytest.raises(TransitionRefused) as no_department:
        move(returned, S.DISPATCHED)
    assert no_department.value.field == "department"
    with pytest.raises(TransitionRefused, match="sanitation returned this case"):
        move(returned, S.DISPATCHED, department="sanitation")
    rerouted = move(returned, S.DISPATCHED, department="parks")
    assert (rerouted.state, rerouted.department, rerouted.returned_by) == (S.DISPATCHED, "parks", None)


def test_a_suspended_case_resumes_where_it_was_and_nowhere_else() -> None:
    suspended = move(case(S.IN_PROGRESS), S.SUSPENDED, reason="waiting for a crane")
    assert (suspended.state, suspended.suspended_from) == (S.SUSPENDED, S.IN_PROGRESS)
    assert allowed_from(suspended) == (S.IN_PROGRESS,)
    with pytest.raises(TransitionRefused, match="allowed from suspended: in_progress"):
        move(suspended, S.DISPATCHED)
    resumed = move(suspended, S.IN_PROGRESS)
    assert (resumed.state, resumed.suspended_from) == (S.IN_PROGRESS, None)


def test_rework_after_a_failed_verification_goes_back_to_work() -> None:
    reopened = move(case(S.REPORTED_DONE), S.REOPENED, note="bags still beside the bin")
    assert allowed_from(reopened) == (S.DISPATCHED, S.ACCEPTED, S.IN_PROGRESS, S.SUSPENDED)
    assert move(reopened, S.IN_PROGRESS).state is S.IN_PROGRESS


def test_redispatching_to_another_department_drops_the_previous_worker() -> None:
    reopened = case(S.REOPENED, assignee="wang")
    assert move(reopened, S.DISPATCHED).assignee == "wang"
    assert move(reopened, S.DISPATCHED, department="parks").assignee is None


def test_the_sensors_verify_and_close_a_worked_case_in_two_recorded_steps() -> None:
    closed, entries = closed_by_sensor(case(S.DISPATCHED), T0 + 9000)
    assert (closed.state, closed.resolution, closed.closed_time_ms) == (
        S.CLOSED, Resolution.VERIFIED_BY_SENSOR, T0 + 9000)
    assert [(e.actor, e.from_state, e.to_state) for e in entries] == [
        (SENSOR_ACTOR, S.DISPATCHED, S.VERIFIED), (SENSOR_ACTOR, S.VERIFIED, S.CLOSED)]


@pytest.mark.parametrize("state", [S.REGISTERED, S.RETURNED])
def test_a_case_nobody_worked_on_closes_as_resolved_by_itself(state: CaseState) -> None:
    closed, entries = closed_by_sensor(case(state), T0 + 9000)
    assert (closed.state, closed.resolution) == (S.CLOSED, Resolution.RESOLVED_BY_ITSELF)
    assert [(e.from_state, e.to_state) for e in entries] == [(state, S.CLOSED)]


def test_a_suspended_case_closed_by_the_sensors_no_longer_waits_to_resume() -> None:
    suspended = move(case(S.ACCEPTED), S.SUSPENDED, reason="road closed")
    closed, _ = closed_by_sensor(suspended, T0 + 9000)
    assert (closed.state, closed.suspended_from, closed.resolution) == (
        S.CLOSED, None, Resolution.VERIFIED_BY_SENSOR)


def test_the_sensors_leave_a_closed_case_alone() -> None:
    closed = case(S.CLOSED, resolution=Resolution.VERIFIED_BY_PERSON)
    assert closed_by_sensor(closed, T0 + 9000) == (closed, [])


def test_a_department_given_with_another_transition_is_refused_not_ignored() -> None:
    with pytest.raises(TransitionRefused) as refused:
        move(case(S.DISPATCHED), S.ACCEPTED, department="parks")
    assert refused.value.field == "department"
    assert str(refused.value) == ("`department` only goes with dispatched (the case stays with sanitation "
                                  "when it goes to accepted)")


def test_a_replaced_case_equals_the_dataclass_copy_and_leaves_the_original_alone() -> None:
    original = case(S.DISPATCHED, assignee="wang")
    copy = replaced(original, open_violations=0, updated_time_ms=T0 + 5)
    assert copy == dataclasses.replace(original, open_violations=0, updated_time_ms=T0 + 5)
    assert (original.open_violations, original.updated_time_ms) == (1, T0)
    with pytest.raises(TypeError, match="Case has no field 'open_violation'"):
        replaced(original, open_violation=0)
