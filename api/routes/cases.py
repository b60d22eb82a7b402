"""Cases (工单) through the API: make one by hand, list, read one with its violations and history, move it.

Reading needs `cases:read`, making and moving `cases:write` (the key's id is the transition's actor).
Photo links and the linked violations' plates and evidence links are masked without `plates`, and an
unmasked read is audited (api/personal_data.py). A transition the case's state does not allow is a 409
`illegal-transition` naming the state and the transitions it allows; one missing what it needs (a
reason, a note, a photo) a 422 naming the field. See docs/cases.md.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, Field, field_validator
from starlette.requests import HTTPConnection
from starlette.responses import Response

from api.access.deps import AccessDep, require
from api.access.keys import ApiKey, Scope
from api.alerts.strict import StrictModel
from api.deps import ServicesDep, StoreDep
from api.links import http_url
from api.params import CursorParam, FromParam, LimitParam, ToParam, time_range_ms
from api.personal_data import PersonalData
from api.problems import (
    CONFLICT,
    ILLEGAL_TRANSITION,
    NOT_FOUND,
    UNAVAILABLE,
    ProblemError,
    invalid,
    problem_response_doc,
)
from api.schemas import LocationOut, ViolationOut
from core.case_settings import CasePriority, Verification
from core.masking import Masker, mask_data
from core.models import Violation
from processors.cases.calendar import SlaStatus
from processors.cases.evaluation import Evaluation, evaluate
from processors.cases.model import Case, CaseOrigin, CaseState, HistoryEntry, Resolution
from processors.cases.service import CaseNotFound, CaseService, NewCase, ViolationInAnotherCase
from processors.cases.sla import sla_status
from processors.cases.states import TransitionRefused, TransitionRequest, allowed_from
from store.cases import CaseQuery, InvalidCaseCursor

router = APIRouter(prefix="/v1/cases", tags=["cases"], responses={503: problem_response_doc(
    "Cases are not available in this instance")})
NO_CASE: dict[int | str, dict[str, Any]] = {404: problem_response_doc("No case with that id")}

CaseReader = Annotated[ApiKey, Depends(require(Scope.CASES_READ))]
CaseWriter = Annotated[ApiKey, Depends(require(Scope.CASES_WRITE))]


def _mask_case(case: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A case as answered (JSON-ready) without its photo links, its history's, and its violations' plates
    and evidence links (as core/masking.py masks violations); the texts (description, notes) stay."""
    found = False

    def without_photo(record: dict[str, Any]) -> dict[str, Any]:
        nonlocal found
        if record.get("photo_url") is None:
            return record
        found = True
        return {**record, "photo_url": None}

    masked = dict(without_photo(case))  # a copy: the caller may still answer the original (plates)
    if "history" in case:
        masked["history"] = [without_photo(entry) for entry in case["history"]]
    if "violations" in case:
        members = []
        for member in case["violations"]:
            violation = member["violation"]
            if violation is not None:
                evidence, in_evidence = mask_data(violation["evidence"])
                found |= in_evidence
                member = {**member, "violation": {**violation, "evidence": evidence}}
            members.append(member)
        masked["violations"] = members
    return masked, found


# One record per case: its photos and its violations' plates and links, audited under the case's id.
CASES: Masker[dict[str, Any]] = Masker("cases", lambda case: str(case["case_id"]), _mask_case)


def get_cases(services: ServicesDep) -> CaseService:
    if services.cases is None:
        raise ProblemError(UNAVAILABLE, "this instance does not keep cases")
    return services.cases


CasesDep = Annotated[CaseService, Depends(get_cases)]


def _case_data(connection: HTTPConnection, access: AccessDep, key: CaseReader) -> PersonalData:
    method = connection.scope.get("method", "GET")
    return PersonalData(access, key, f"{method} {connection.url.path}")


CaseData = Annotated[PersonalData, Depends(_case_data)]


class LocationIn(StrictModel):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class CaseIn(StrictModel):
    type: str = Field(min_length=1, max_length=100, description="What the case is about; for cases made "
                      "by hand any name (pothole, graffiti ...), a violation type otherwise.")
    description: str = Field(min_length=1, max_length=2000, description="What is wrong, where.")
    department: str | None = Field(None, min_length=1, description="The owning department, if known.")
    category: str | None = Field(None, min_length=1, description="The event category code.")
    priority: CasePriority = CasePriority.NORMAL
    grid: str | None = Field(None, min_length=1)
    district: str | None = Field(None, min_length=1)
    location: LocationIn | None = None
    photo_url: str | None = Field(None, description="A photo of what was reported (an evidence link).")
    violation_ids: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=100,
        description="Existing violations the case is about, by id: each must be one the store holds and "
        "must belong to no other case. A cleared one joins as cleared; the case is verified by a person.")

    _url = field_validator("photo_url")(http_url)


class TransitionIn(StrictModel):
    to: CaseState = Field(description="The state to move the case to.")
    note: str = Field("", max_length=2000, description="Kept in the history; required for reported_done "
                      "and reopened.")
    assignee: str | None = Field(None, min_length=1, description="dispatched: the named worker; accepted: "
                                 "who accepted.")
    department: str | None = Field(None, min_length=1, description="dispatched: the department (required "
                                   "after returned, and another than the one that returned it).")
    photo_url: str | None = Field(None, description="reported_done: a photo of the result (required).")
    reason: str | None = Field(None, min_length=1, max_length=2000,
                               description="returned and suspended: why (required).")

    _url = field_validator("photo_url")(http_url)


class HistoryOut(BaseModel):
    seq: int
    time_ms: int = Field(description="When the transition was made, epoch milliseconds UTC.")
    actor: str = Field(description="The API key id that made it; `sensor` when the case's violations "
                       "cleared, `routing` when a violation opened the case.")
    from_state: CaseState | None
    to_state: CaseState
    note: str
    assignee: str | None
    department: str | None
    photo_url: str | None
    reason: str | None


class CaseOut(BaseModel):
    case_id: str
    type: str
    state: CaseState
    allowed_transitions: list[CaseState] = Field(description="The states it can be moved to now.")
    priority: CasePriority
    verify: Verification = Field(description="sensor: it closes when its violations clear; person: "
                                 "someone verifies it.")
    origin: CaseOrigin = Field(description="violation: opened by a routed violation; manual: made through "
                               "the API.")
    department: str | None
    assignee: str | None
    category: str | None
    place: str | None = Field(description="The device its violations came from (open cases de-duplicate "
                              "on type and place).")
    grid: str | None
    district: str | None
    location: LocationOut | None
    description: str
    photo_url: str | None
    created_by: str
    created_time_ms: int
    updated_time_ms: int
    closed_time_ms: int | None
    resolution: Resolution | None = Field(description="How it closed: verified_by_person, "
                                          "verified_by_sensor or resolved_by_itself.")
    suspended_from: CaseState | None = Field(description="Suspended: the state it resumes to.")
    returned_by: str | None = Field(description="Returned: the department that returned it.")
    open_violations: int = Field(description="Linked violations not cleared yet.")
    deadline_ms: int | None = Field(description="When its SLA allowance is used up (epoch ms); null while "
                                    "suspended or when the SLA policy has no terms for its priority.")
    warning_ms: int | None = Field(description="When its SLA warning is due (epoch ms).")
    sla_status: SlaStatus | None = Field(description="within, warning or overdue now; null when closed, "
                                         "suspended or without a deadline.")
    escalated_to: str | None = Field(description="The supervisor department a breached deadline "
                                     "escalated it to.")


class CaseViolationOut(BaseModel):
    violation_id: str
    joined_time_ms: int = Field(description="When it joined the case.")
    cleared_time_ms: int | None = Field(description="When its clearing reached the case; null while open.")
    violation: ViolationOut | None = Field(description="The violation with its evidence; null if the store "
                                           "no longer holds it (retention).")


class CaseDetail(CaseOut):
    violations: list[CaseViolationOut]
    history: list[HistoryOut]


class CasePageOut(BaseModel):
    items: list[CaseOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next, older page; null at the end.")


def _case_out(case: Case, now_ms: int) -> dict[str, Any]:
    location = LocationOut(lat=case.lat, lon=case.lon) if case.lat is not None and case.lon is not None \
        else None
    return CaseOut(
        case_id=case.case_id, type=case.type, state=case.state, allowed_transitions=list(allowed_from(case)),
        priority=case.priority, verify=case.verify, origin=case.origin, department=case.department,
        assignee=case.assignee, category=case.category, place=case.place, grid=case.grid,
        district=case.district, location=location, description=case.description, photo_url=case.photo_url,
        created_by=case.created_by, created_time_ms=case.created_time_ms,
        updated_time_ms=case.updated_time_ms, closed_time_ms=case.closed_time_ms,
        resolution=case.resolution, suspended_from=case.suspended_from, returned_by=case.returned_by,
        open_violations=case.open_violations, deadline_ms=case.deadline_ms, warning_ms=case.warning_ms,
        sla_status=sla_status(case, now_ms), escalated_to=case.escalated_to).model_dump(mode="json")


def _history_out(entry: HistoryEntry) -> dict[str, Any]:
    return HistoryOut(seq=entry.seq, time_ms=entry.time_ms, actor=entry.actor, from_state=entry.from_state,
                      to_state=entry.to_state, note=entry.note, assignee=entry.assignee,
                      department=entry.department, photo_url=entry.photo_url,
                      reason=entry.reason).model_dump(mode="json")


def _detail(service: CaseService, store: StoreDep, case: Case) -> dict[str, Any]:
    violations = []
    for member in service.store.violations(case.case_id):
        violation = store.get_violation(member.violation_id)
        violations.append(CaseViolationOut(
            violation_id=member.violation_id, joined_time_ms=member.joined_time_ms,
            cleared_time_ms=member.cleared_time_ms,
            violation=ViolationOut.model_validate(msgspec.to_builtins(violation)) if violation else None,
        ).model_dump(mode="json"))
    history = [_history_out(entry) for entry in service.store.history(case.case_id)]
    return {**_case_out(case, service.now_ms()), "violations": violations, "history": history}


def _existing(service: CaseService, case_id: str) -> Case:
    case = service.store.get(case_id)
    if case is None:
        raise ProblemError(NOT_FOUND, f"no case {case_id!r}")
    return case


StateParam = Annotated[list[CaseState] | None, Query(description="Only cases in these states (repeatable).")]


@router.get("", response_model=CasePageOut, summary="List cases, newest first")
def list_cases(
    service: CasesDep,
    personal: CaseData,
    state: StateParam = None,
    department: Annotated[list[str] | None, Query(description="The owning department (repeatable).")] = None,
    type: Annotated[list[str] | None, Query(description="The case type (repeatable).")] = None,
    grid: Annotated[list[str] | None, Query(description="The grid (repeatable).")] = None,
    district: Annotated[list[str] | None, Query(description="The district (repeatable).")] = None,
    violation: Annotated[list[str] | None, Query(
        description="A violation id (repeatable): the case it belongs to.")] = None,
    from_: FromParam = None,
    to: ToParam = None,
    limit: LimitParam = 100,
    cursor: CursorParam = None,
) -> dict[str, Any]:
    """`from` and `to` bound the time the case was created."""
    from_ms, to_ms = time_range_ms(from_, to)
    query = CaseQuery(states=state or (), departments=department or (), types=type or (), grids=grid or (),
                      districts=district or (), violations=violation or (), from_ms=from_ms, to_ms=to_ms,
                      limit=limit, cursor=cursor)
    now = service.now_ms()
    try:
        page = service.store.query(query)
    except InvalidCaseCursor as exc:
        raise invalid("cursor", str(exc)) from exc
    return {"items": personal.show([_case_out(case, now) for case in page.items], CASES),
            "next_cursor": page.next_cursor}


@router.post("", status_code=201, response_model=CaseDetail, summary="Make a case by hand",
             responses={409: problem_response_doc("A violation in `violation_ids` belongs to another case "
                                                  "(`conflict`)")})
def create_case(body: CaseIn, key: CaseWriter, service: CasesDep, store: StoreDep,
                access: AccessDep, connection: HTTPConnection) -> dict[str, Any]:
    """A case made by hand is verified by a person (`verify: person`); it may link existing violations
    (`violation_ids`): an unknown id is a 422 naming it, one that belongs to another case a 409."""
    location = body.location
    violations: dict[str, Violation] = {}
    for index, violation_id in enumerate(body.violation_ids):
        if violation_id in violations:
            continue  # named twice: linked once
        violation = store.get_violation(violation_id)
        if violation is None:
            raise invalid(f"violation_ids.{index}", f"no violation {violation_id!r}", location="body")
        violations[violation_id] = violation
    try:
        case = service.create(NewCase(
            type=body.type, description=body.description, department=body.department,
            category=body.category, priority=body.priority, grid=body.grid, district=body.district,
            lat=location.lat if location is not None else None,
            lon=location.lon if location is not None else None,
            photo_url=body.photo_url), key.key_id, list(violations.values()))
    except ViolationInAnotherCase as exc:
        raise ProblemError(CONFLICT, str(exc)) from exc
    return _shown_detail(service, store, case, key, access, connection)


class EvaluationOut(BaseModel):
    """Figures per group as processors/cases/evaluation.py computes them (docs/cases.md, "Evaluation")."""

    from_ms: int
    to_ms: int
    city: dict[str, Any] = Field(description="registered, due, closed, on_time, reworked, returned, "
                                 "closure_rate, on_time_rate, rework_rate, close_time_p50_ms, "
                                 "close_time_p90_ms, backlog (by age), backlog_total, backlog_overdue, "
                                 "backlog_suspended; rates are fractions, null when nothing is due.")
    district: dict[str, dict[str, Any]] = Field(description="The same figures per district.")
    grid: dict[str, dict[str, Any]] = Field(description="The same figures per grid.")
    department: dict[str, dict[str, Any]] = Field(description="The same figures per department.")


EvalFrom = Annotated[AwareDatetime, Query(alias="from", description="Start of the period (inclusive), "
                                          "RFC 3339 with offset.")]
EvalTo = Annotated[AwareDatetime, Query(alias="to", description="End of the period (exclusive); the "
                                        "figures are as of this instant.")]
EVALUATION_DOC: dict[int | str, dict[str, Any]] = {422: problem_response_doc(
    "`from` not before `to`, or a time without its offset")}


def _evaluation(service: CaseService, from_: datetime, to: datetime) -> Evaluation:
    from_ms, to_ms = time_range_ms(from_, to)
    assert from_ms is not None and to_ms is not None
    return evaluate(service.store.evaluation_columns(from_ms, to_ms, service.now_ms()), from_ms, to_ms)


@router.get("/evaluation", response_model=EvaluationOut, dependencies=[Depends(require(Scope.CASES_READ))],
            summary="Evaluation figures of a period per department, grid, district and city",
            responses=EVALUATION_DOC)
def case_evaluation(service: CasesDep, from_: EvalFrom, to: EvalTo) -> dict[str, Any]:
    """Cases registered in [from, to), and the backlog open at `to` (docs/cases.md, "Evaluation")."""
    return _evaluation(service, from_, to).as_json()


@router.get("/evaluation.csv", response_class=Response, dependencies=[Depends(require(Scope.CASES_READ))],
            summary="The evaluation figures as CSV, one row per group",
            responses={**EVALUATION_DOC, 200: {"content": {"text/csv": {"schema": {"type": "string"}}}}})
def case_evaluation_csv(service: CasesDep, from_: EvalFrom, to: EvalTo) -> Response:
    """Columns `level`, `key`, the figures, then `backlog_<age>`; the city first, then districts, grids
    and departments by name; an empty cell where the JSON has null."""
    buffer = io.StringIO()
    _evaluation(service, from_, to).write_csv(buffer)
    return Response(buffer.getvalue(), media_type="text/csv")


@router.get("/{case_id}", response_model=CaseDetail, summary="One case with its violations and history",
            responses=NO_CASE)
def get_case(case_id: str, service: CasesDep, store: StoreDep, personal: CaseData) -> dict[str, Any]:
    [shown] = personal.show([_detail(service, store, _existing(service, case_id))], CASES)
    return shown


@router.post("/{case_id}/transitions", response_model=CaseDetail, summary="Move a case to another state",
             responses={**NO_CASE, 409: problem_response_doc(
                 "The case's state does not allow the transition (`illegal-transition`)")})
def transition_case(case_id: str, body: TransitionIn, key: CaseWriter, service: CasesDep, store: StoreDep,
                    access: AccessDep, connection: HTTPConnection) -> dict[str, Any]:
    request = TransitionRequest(to=body.to, note=body.note, assignee=body.assignee,
                                department=body.department, photo_url=body.photo_url, reason=body.reason)
    try:
        case = service.transition(case_id, request, key.key_id)
    except CaseNotFound as exc:
        raise ProblemError(NOT_FOUND, str(exc)) from exc
    except TransitionRefused as exc:
        if exc.field is not None:
            raise invalid(exc.field, exc.detail, location="body") from exc
        raise ProblemError(ILLEGAL_TRANSITION, exc.detail) from exc
    return _shown_detail(service, store, case, key, access, connection)


def _shown_detail(service: CaseService, store: StoreDep, case: Case, key: ApiKey, access: AccessDep,
                  connection: HTTPConnection) -> dict[str, Any]:
    """The case as the writer may see it: a writer without `plates` gets photo links masked too."""
    personal = PersonalData(access, key, f"POST {connection.url.path}")
    [shown] = personal.show([_detail(service, store, case)], CASES)
    return shown

