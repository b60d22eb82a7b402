"""Sanitation dispatch: plan a shift's truck routes from the bin forecasts, read them as JSON, CSV or
GeoJSON, report stops done and re-plan what remains (processors/dispatch/, docs/dispatch.md).

Plans are read with `readings:read`; making, re-planning and reporting stops need `dispatch:write`. They
live in the relational database (store/dispatch.py), so any api replica serves any plan; where cases
exist, stops carry their bins' cases and move them on (api/dispatch_cases.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.access.deps import require
from api.access.keys import ApiKey, Scope
from api.alerts.strict import StrictModel
from api.deps import ServicesDep
from api.dispatch_cases import DispatchCases
from api.links import http_url
from api.problems import CONFLICT, NOT_FOUND, ProblemError, problem_response_doc
from api.services import ApiServices
from core.dispatch_settings import DepotSettings
from core.models import Violation, ViolationStatus
from processors.dispatch.board import PlanBoard
from processors.dispatch.candidates import candidates_from, depot_for
from processors.dispatch.export import iso_utc, plan_csv, plan_geojson
from processors.dispatch.model import BinCandidate, Plan, StopReport, StopStatus
from processors.dispatch.planner import plan_shift, replan, shift_window
from processors.rules.bin_near_full import PREDICTION_TYPE
from store.base import Store, ViolationQuery
from store.dispatch import PlanNotFound, StopAlreadyDone, StopNotFound

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/dispatch", tags=["dispatch"])
READ = [Depends(require(Scope.READINGS_READ))]
WRITE = [Depends(require(Scope.DISPATCH_WRITE))]
Writer = Annotated[ApiKey, Depends(require(Scope.DISPATCH_WRITE))]
NO_PLAN: dict[int | str, dict[str, Any]] = {404: problem_response_doc("No plan with that id")}
# Most bins one plan reads forecasts for (a city's whole bin fleet, with room).
MAX_BINS = 100_000
PlanId = Annotated[str, Path(min_length=1, max_length=200, description="The plan's id, e.g. "
                                                                          "2026-12-07.futian.day.")]


def get_board(services: ServicesDep) -> PlanBoard:
    return services.dispatch


BoardDep = Annotated[PlanBoard, Depends(get_board)]


class PlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    depot_id: str = Field(min_length=1, description="A depot of the `dispatch.depots` configuration.")
    shift_id: str = Field(min_length=1, description="One of that depot's shifts.")
    date: dt.date | None = Field(None, description="Local date the shift starts on (the dispatch time "
                                                   "zone); default: today there.")


class StopDoneIn(StrictModel):
    photo_url: str | None = Field(None, description="A photo of the emptied bin: the stop's case goes to "
                                  "reported_done with it; without one the case stops at in_progress.")
    note: str = Field("", max_length=2000, description="Kept in the case's history.")

    _url = field_validator("photo_url")(http_url)


class StopOut(BaseModel):
    device_id: str
    lat: float
    lon: float
    eta_ms: int = Field(description="Expected arrival, epoch milliseconds UTC.")
    eta_utc: str
    expected_fill_pct: float = Field(description="The bin's forecast fill at that arrival.")
    load_after: int = Field(description="The truck's load after this bin (capacity_unit).")
    mandatory: bool = Field(description="Predicted to overflow before the next service window.")
    status: StopStatus = Field(description="planned; under_way (the truck is driving there, a re-plan keeps "
                                           "it); done (reported done).")
    done_time_ms: int | None = None
    case_id: str | None = Field(None, description="The bin's open bin_overflow case (else bin_near_full) "
                                "that this stop moves on; null without one (docs/dispatch.md, Cases).")


class RouteOut(BaseModel):
    truck_id: str
    capacity: int
    load: int = Field(description="Load at the transfer station (capacity_unit).")
    depart_ms: int
    transfer_eta_ms: int = Field(description="Arrival at the transfer station.")
    return_ms: int = Field(description="Back at the depot, after unloading.")
    distance_m: int
    stops: list[StopOut] = Field(description="In visiting order.")


class LeftOutOut(BaseModel):
    device_id: str
    reason: str = Field(description="no_location, larger_than_truck, unreachable_in_shift, fleet_capacity or "
                                    "shift_time (docs/dispatch.md).")


class FlaggedOut(BaseModel):
    device_id: str
    flags: list[str] = Field(description="The open violation types that need a person first.")
    lat: float | None
    lon: float | None


class FiguresOut(BaseModel):
    distance_m: int
    bins_served: int
    mandatory_bins: int
    mandatory_missed: int
    optional_served: int
    optional_skipped: int
    flagged: int


class ShiftOut(BaseModel):
    shift_id: str
    start_ms: int
    end_ms: int
    next_start_ms: int = Field(description="Start of the next service window: bins full before it are "
                                           "mandatory.")


class PlanOut(BaseModel):
    plan_id: str
    revision: int = Field(description="1 when planned; +1 per re-plan.")
    depot_id: str
    shift: ShiftOut
    capacity_unit: str = Field(description="litres or bins.")
    routes: list[RouteOut]
    left_out: list[LeftOutOut] = Field(description="Mandatory bins not in the plan, and why.")
    flagged: list[FlaggedOut] = Field(description="Bins kept out of the routes for a person to check.")
    figures: FiguresOut
    solver: str = Field(description="pyvrp, or nearest_neighbour (the fallback).")
    stopped_by: str = Field(description="iterations (repeatable), time_budget or complete.")
    solve_time_s: float
    planned_time_ms: int


class PlanSummary(BaseModel):
    plan_id: str
    revision: int
    depot_id: str
    shift_id: str
    start_ms: int
    figures: FiguresOut


class PlanList(BaseModel):
    items: list[PlanSummary] = Field(description="Newest first.")


def plan_out(plan: Plan) -> PlanOut:
    return PlanOut(
        plan_id=plan.plan_id, revision=plan.revision, depot_id=plan.depot_id,
        shift=ShiftOut(**dataclasses.asdict(plan.shift)), capacity_unit=plan.capacity_unit.value,
        routes=[RouteOut(truck_id=route.truck_id, capacity=route.capacity, load=route.load,
                         depart_ms=route.depart_ms, transfer_eta_ms=route.transfer_eta_ms,
                         return_ms=route.return_ms, distance_m=route.distance_m,
                         stops=[StopOut(**dataclasses.asdict(stop), eta_utc=iso_utc(stop.eta_ms))
                                for stop in route.stops])
                for route in plan.routes],
        left_out=[LeftOutOut(device_id=left.device_id, reason=left.reason.value) for left in plan.left_out],
        flagged=[FlaggedOut(device_id=f.device_id, flags=list(f.flags), lat=f.lat, lon=f.lon)
                 for f in plan.flagged],
        figures=FiguresOut(**dataclasses.asdict(plan.figures)), solver=plan.solver,
        stopped_by=plan.stopped_by, solve_time_s=plan.solve_time_s, planned_time_ms=plan.planned_time_ms)


def _open_violations(store: Store, types: tuple[str, ...]) -> list[Violation]:
    found: list[Violation] = []
    cursor = None
    while True:
        page = store.query_violations(ViolationQuery(types=types, status=ViolationStatus.OPEN, limit=1000,
                                                     cursor=cursor))
        found.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return found


def depot_candidates(store: Store, board: PlanBoard, depot: DepotSettings, volumes_l: dict[str, float],
                     cases: DispatchCases | None = None) -> list[BinCandidate]:
    """The depot's bins with their newest forecasts, open violations and open cases."""
    settings = board.settings
    violations = _open_violations(store, tuple(sorted({*settings.flag_types, *settings.urgency_types})))
    candidates = candidates_from(store.query_predictions(PREDICTION_TYPE, MAX_BINS), violations, settings,
                                 volumes_l)
    open_cases = cases.open_cases() if cases is not None else {}
    return [dataclasses.replace(c, case_id=open_cases.get(c.device_id)) for c in candidates
            if depot_for(c.district, c.lat, c.lon, settings.depots) == depot.depot_id]


def _cases(services: ApiServices) -> DispatchCases | None:
    return DispatchCases(services.cases) if services.cases is not None else None


def _candidates(services: ApiServices, depot: DepotSettings) -> list[BinCandidate]:
    return depot_candidates(services.store, services.dispatch, depot, _volumes(services), _cases(services))


def _volumes(services: ApiServices) -> dict[str, float]:
    """Bin volumes the registry gives (`install.bin_volume_l`)."""
    if services.devices is None:
        return {}
    return {device.device_id: device.install["bin_volume_l"] for device in services.devices.list(kind="bin")
            if "bin_volume_l" in device.install}


def _plan_or_404(board: PlanBoard, plan_id: str) -> Plan:
    plan = board.get(plan_id)
    if plan is None:
        raise ProblemError(NOT_FOUND, f"no plan {plan_id!r}")
    return plan


def _depot_of(board: PlanBoard, plan: Plan) -> DepotSettings:
    depot = board.settings.depot(plan.depot_id)
    if depot is None:
        raise ProblemError(CONFLICT, f"depot {plan.depot_id!r} is no longer configured")
    return depot


@router.post("/plans", response_model=PlanOut, status_code=201, dependencies=WRITE,
             summary="Plan a shift's routes for one depot (replaces that shift's plan)",
             responses={404: problem_response_doc("No such depot, or no such shift at that depot")})
def create_plan(request: PlanRequest, services: ServicesDep, board: BoardDep) -> PlanOut:
    settings = board.settings
    depot = settings.depot(request.depot_id)
    if depot is None:
        raise ProblemError(NOT_FOUND, f"no depot {request.depot_id!r} in dispatch.depots")
    if depot.shift(request.shift_id) is None:
        raise ProblemError(NOT_FOUND, f"depot {depot.depot_id!r} has no shift {request.shift_id!r}")
    now_ms = board.now_ms()
    date = request.date or dt.datetime.fromtimestamp(now_ms / 1000, ZoneInfo(settings.time_zone)).date()
    shift = shift_window(depot, request.shift_id, date, settings.time_zone)
    with board.planning:
        plan = plan_shift(plan_id=f"{date.isoformat()}.{depot.depot_id}.{request.shift_id}", depot=depot,
                          shift=shift, candidates=_candidates(services, depot), settings=settings,
                          travel=board.travel(), now_ms=now_ms)
        board.put(plan)
    _dispatch_cases(services, plan)
    return plan_out(plan)


@router.get("/plans", response_model=PlanList, dependencies=READ, summary="The plans kept, newest first")
def list_plans(board: BoardDep) -> PlanList:
    return PlanList(items=[
        PlanSummary(plan_id=plan.plan_id, revision=plan.revision, depot_id=plan.depot_id,
                    shift_id=plan.shift.shift_id, start_ms=plan.shift.start_ms,
                    figures=FiguresOut(**dataclasses.asdict(plan.figures)))
        for plan in board.plans()])


@router.get("/plans/{plan_id}", response_model=PlanOut, dependencies=READ, responses=NO_PLAN,
            summary="A plan: per truck its ordered stops with ETA, expected fill and load")
def get_plan(plan_id: PlanId, board: BoardDep) -> PlanOut:
    return plan_out(_plan_or_404(board, plan_id))


@router.get("/plans/{plan_id}/stops.csv", dependencies=READ, response_class=Response,
            responses={**NO_PLAN, 200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
            summary="A plan's stops as CSV, one row per stop in visiting order")
def get_plan_csv(plan_id: PlanId, board: BoardDep, services: ServicesDep) -> Response:
    """`eta_local`: the arrival in the city's time zone (`traffic.time_zone`), next to `eta_ms`."""
    return Response(plan_csv(_plan_or_404(board, plan_id), ZoneInfo(services.time_zone)),
                    media_type="text/csv")


@router.get("/plans/{plan_id}/map.geojson", dependencies=READ, response_class=Response,
            responses={**NO_PLAN, 200: {"content": {"application/geo+json": {"schema": {"type": "object"}}}}},
            summary="A plan as GeoJSON for the map: routes, stops, depot, transfer station, flagged bins")
def get_plan_geojson(plan_id: PlanId, board: BoardDep) -> Response:
    return Response(json.dumps(plan_geojson(_plan_or_404(board, plan_id))), media_type="application/geo+json")


@router.post("/plans/{plan_id}/stops/{device_id}/done", response_model=PlanOut,
             summary="Report a stop done; its case moves on and the stops not yet under way are re-planned",
             responses={404: problem_response_doc("No plan with that id, or no stop at that bin in it"),
                        409: problem_response_doc("That stop is already reported done, or the plan's depot "
                                                  "is no longer configured")})
def report_stop_done(plan_id: PlanId, device_id: Annotated[str, Path(min_length=1, max_length=128)],
                     key: Writer, services: ServicesDep, board: BoardDep,
                     body: StopDoneIn | None = None) -> PlanOut:
    body = body or StopDoneIn()
    _depot_of(board, _plan_or_404(board, plan_id))
    try:
        report = board.store.record_done(plan_id, device_id, done_time_ms=board.now_ms(), actor=key.key_id,
                                         note=body.note, photo_url=body.photo_url)
    except PlanNotFound as exc:
        raise ProblemError(NOT_FOUND, f"no plan {plan_id!r}") from exc
    except StopNotFound as exc:
        raise ProblemError(NOT_FOUND, f"plan {plan_id!r} has no stop at {device_id!r}") from exc
    except StopAlreadyDone as exc:
        raise ProblemError(CONFLICT, f"the stop at {device_id!r} is already reported done") from exc
    # The report is stored: whatever happens below, every reader sees the stop done.
    _case_of_stop(services, report)
    return plan_out(replan_now(services, plan_id))


@router.post("/plans/{plan_id}/replan", response_model=PlanOut, dependencies=WRITE,
             summary="Re-plan the stops not yet under way with the newest forecasts",
             responses={**NO_PLAN, 409: problem_response_doc("The plan's depot is no longer configured")})
def replan_plan(plan_id: PlanId, services: ServicesDep) -> PlanOut:
    return plan_out(replan_now(services, plan_id))


def replan_now(services: ApiServices, plan_id: str) -> Plan:
    """Plan `plan_id`'s remaining stops again with the newest forecasts (the replan route, a stop reported
    done, and the re-plans after a bin crossed a threshold: processors/dispatch/watch.py).

    Stored only over the version it started from: when another replica stored the plan meanwhile, that
    plan is kept if it already holds every stop reported done, else this re-plans again from it."""
    board = services.dispatch
    with board.planning:
        stored = board.stored(plan_id)
        while True:
            if stored is None:
                raise ProblemError(NOT_FOUND, f"no plan {plan_id!r}")
            depot = _depot_of(board, stored.plan)
            updated = replan(stored.plan, depot=depot, settings=board.settings, travel=board.travel(),
                             now_ms=board.now_ms(), candidates=_candidates(services, depot))
            if board.store.replace(updated, stored):
                break
            stored = board.stored(plan_id)
            if stored is not None and stored.holds_reports:
                log.info("plan %s was re-planned through another instance meanwhile; keeping that", plan_id)
                return stored.plan
    _dispatch_cases(services, updated)
    return updated


def _dispatch_cases(services: ApiServices, plan: Plan) -> None:
    cases = _cases(services)
    if cases is not None:
        try:
            cases.dispatch_planned(plan)
        except Exception:  # the plan stands without its cases dispatched; the next re-plan tries again
            log.exception("dispatching the cases of plan %s failed", plan.plan_id)


def _case_of_stop(services: ApiServices, report: StopReport) -> None:
    cases = _cases(services)
    if cases is not None:
        try:
            cases.stop_done(report)
        except Exception:  # the stop stays reported done; the case is moved by hand or verified by sensor
            log.exception("moving the case of the stop at %s on plan %s failed", report.device_id,
                          report.plan_id)
