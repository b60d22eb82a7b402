"""A shift's plan for one depot: which bins, which truck, in what order, and what could not be done.

`plan_shift` plans a whole shift, or (given the stops each truck keeps) what remains of it; `replan` works
out what a running plan keeps: the stops reported done and the one each truck is driving to.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from zoneinfo import ZoneInfo

from core.dispatch_settings import DepotSettings, DispatchSettings, clock_minutes
from processors.dispatch.candidates import is_mandatory, urgency
from processors.dispatch.model import (
    BinCandidate,
    CapacityUnit,
    Figures,
    Flagged,
    LeftOut,
    LeftReason,
    Place,
    Plan,
    Route,
    ShiftWindow,
    Stop,
    StopReport,
    StopStatus,
    Truck,
)
from processors.dispatch.solver import (
    MANDATORY_PRIZE,
    RoutingProblem,
    Solved,
    TruckStart,
    solve_nearest_neighbour,
    solve_pyvrp,
)
from processors.dispatch.travel import TravelModel, plane_m

# A solver for a routing problem; None: it found nothing usable (the nearest-neighbour routes are used).
Solver = Callable[[RoutingProblem, DispatchSettings], Solved | None]


def pyvrp_solver(problem: RoutingProblem, settings: DispatchSettings) -> Solved | None:
    return solve_pyvrp(problem, iterations=settings.iterations, time_budget_s=settings.time_budget_s,
                       seed=settings.seed)


def shift_window(depot: DepotSettings, shift_id: str, date: dt.date, time_zone: str) -> ShiftWindow:
    """The shift `shift_id` starting on local `date`, and the start of the depot's next shift after it."""
    zone = ZoneInfo(time_zone)
    shift = depot.shift(shift_id)
    if shift is None:
        raise KeyError(shift_id)

    def at(day: dt.date, clock: str) -> int:
        minutes = clock_minutes(clock)
        local = dt.datetime.combine(day, dt.time(minutes // 60, minutes % 60), tzinfo=zone)
        return int(local.timestamp() * 1000)

    start_ms = at(date, shift.start)
    end_day = date + dt.timedelta(days=1) if clock_minutes(shift.end) <= clock_minutes(shift.start) else date
    starts = sorted(at(day, other.start) for day in (date, date + dt.timedelta(days=1))
                    for other in depot.shifts)
    next_start_ms = next(start for start in starts if start > start_ms)
    return ShiftWindow(shift_id=shift_id, start_ms=start_ms, end_ms=at(end_day, shift.end),
                       next_start_ms=next_start_ms)


def fleet_of(depot: DepotSettings) -> tuple[tuple[Truck, ...], CapacityUnit]:
    in_bins = depot.trucks[0].capacity_bins is not None
    trucks = tuple(Truck(truck.truck_id, int((truck.capacity_bins if in_bins else truck.capacity_l) or 0))
                   for truck in depot.trucks)
    return trucks, CapacityUnit.BINS if in_bins else CapacityUnit.LITRES


def demand_of(candidate: BinCandidate, unit: CapacityUnit, shift: ShiftWindow) -> int:
    """Load a bin adds: one bin, or its litres at the expected fill at the shift's end (an upper bound on
    its fill when the truck comes, so a truck never arrives to more than it has room for)."""
    if unit is CapacityUnit.BINS:
        return 1
    return max(1, math.ceil(candidate.volume_l * candidate.fill_at(shift.end_ms) / 100.0))


def plan_shift(*, plan_id: str, depot: DepotSettings, shift: ShiftWindow,
               candidates: Sequence[BinCandidate], settings: DispatchSettings, travel: TravelModel,
               now_ms: int, kept: Mapping[str, tuple[Stop, ...]] | None = None,
               departed: Mapping[str, int] | None = None, revision: int = 1,
               solver: Solver | None = pyvrp_solver) -> Plan:
    """Plan the shift (or, with `kept` stops per truck, the rest of it) for the depot's trucks."""
    # A case opened since a kept stop was planned is linked to it while the truck is still on its way.
    case_of = {c.device_id: c.case_id for c in candidates if c.case_id is not None}
    kept = {truck_id: tuple(replace(stop, case_id=case_of.get(stop.device_id))
                            if stop.status is StopStatus.UNDER_WAY and stop.case_id is None else stop
                            for stop in stops)
            for truck_id, stops in (kept or {}).items()}
    trucks, unit = fleet_of(depot)
    home = Place(depot.depot_id, depot.lat, depot.lon)
    station = depot.transfer_station
    transfer = Place(station.station_id, station.lat, station.lon)
    service_s = round(settings.service_s)
    kept_ids = {stop.device_id for stops in kept.values() for stop in stops}
    flagged = tuple(Flagged(c.device_id, c.flags, c.lat, c.lon) for c in candidates
                    if c.flags and c.device_id not in kept_ids)
    open_bins = [c for c in candidates if not c.flags and c.device_id not in kept_ids]
    mandatory = frozenset(c.device_id for c in open_bins
                          if is_mandatory(c, shift, settings.mandatory_fill_pct))
    unplaced = tuple(LeftOut(c.device_id, LeftReason.NO_LOCATION) for c in open_bins
                     if c.device_id in mandatory and (c.lat is None or c.lon is None))
    routable = [c for c in open_bins if c.lat is not None and c.lon is not None]

    starts_at: list[tuple[float, float]] = []
    free_ms: list[int] = []
    loads: list[int] = []
    for truck in trucks:
        stops = kept.get(truck.truck_id, ())
        if stops:
            last = stops[-1]
            reached = last.done_time_ms if last.done_time_ms is not None else max(now_ms, last.eta_ms)
            starts_at.append((last.lat, last.lon))
            free_ms.append(reached + service_s * 1000 if last.status is not StopStatus.DONE else reached)
            loads.append(last.load_after)
        else:
            starts_at.append((home.lat, home.lon))
            free_ms.append(max(now_ms, shift.start_ms))
            loads.append(0)
    points = [(transfer.lat, transfer.lon), *starts_at, *((c.lat or 0.0, c.lon or 0.0) for c in routable),
              (home.lat, home.lon)]
    distance_m, duration_s = travel.matrices(points)
    depot_point = len(points) - 1
    shift_s = (shift.end_ms - shift.start_ms) // 1000
    deadline_s = shift_s - round(station.unload_s) - int(duration_s[0, depot_point])
    problem = RoutingProblem(
        distance_m=distance_m, duration_s=duration_s,
        trucks=tuple(TruckStart(point=1 + number, free_s=(free - shift.start_ms) // 1000,
                                capacity_left=truck.capacity - load)
                     for number, (truck, free, load) in enumerate(zip(trucks, free_ms, loads, strict=True))),
        demands=tuple(demand_of(c, unit, shift) for c in routable),
        prizes=tuple(MANDATORY_PRIZE if c.device_id in mandatory
                     else round(settings.optional_value_m * urgency(c, shift, settings.urgency_horizon_h))
                     for c in routable),
        service_s=service_s, deadline_s=deadline_s, positions=plane_m(points))
    solved = None
    if solver is not None:
        solved = solver(problem, settings)
        if solved is not None and not fits(problem, solved):
            solved = None
    if solved is None:
        solved = solve_nearest_neighbour(problem)

    routes = []
    for number, (truck, order) in enumerate(zip(trucks, solved.orders, strict=True)):
        routes.append(_route(truck, number, order, problem, routable, mandatory, shift, home, travel,
                             kept.get(truck.truck_id, ()), (departed or {}).get(truck.truck_id),
                             depot_point, round(station.unload_s)))
    served = {stop.device_id for route in routes for stop in route.stops}
    left = unplaced + tuple(
        LeftOut(c.device_id, left_reason(problem, index, routable, mandatory, served))
        for index, c in enumerate(routable) if c.device_id in mandatory and c.device_id not in served)
    all_mandatory = mandatory | {s.device_id for stops in kept.values() for s in stops if s.mandatory}
    figures = Figures(
        distance_m=sum(route.distance_m for route in routes), bins_served=len(served),
        mandatory_bins=len(all_mandatory), mandatory_missed=len(left),
        optional_served=len(served - all_mandatory),
        optional_skipped=sum(1 for c in routable if c.device_id not in served | mandatory),
        flagged=len(flagged))
    return Plan(plan_id=plan_id, revision=revision, depot_id=depot.depot_id, shift=shift, capacity_unit=unit,
                depot=home, transfer_station=transfer, routes=tuple(routes), left_out=left, flagged=flagged,
                figures=figures, solver=solved.solver, stopped_by=solved.stopped_by,
                solve_time_s=round(solved.seconds, 3), planned_time_ms=now_ms, mandatory=all_mandatory)


def fits(problem: RoutingProblem, solved: Solved) -> bool:
    """Every route within its truck's capacity and the shift, and no bin twice."""
    seen: set[int] = set()
    for truck, order in zip(problem.trucks, solved.orders, strict=True):
        at, now, load = truck.point, truck.free_s, 0
        for index in order:
            point = problem.bin_point(index)
            now += int(problem.duration_s[at, point]) + problem.service_s
            load += problem.demands[index]
            at = point
        late = now + int(problem.duration_s[at, 0]) > problem.deadline_s
        if order and (load > truck.capacity_left or late):
            return False
        if seen & set(order):
            return False
        seen.update(order)
    return True


def left_reason(problem: RoutingProblem, index: int, routable: Sequence[BinCandidate],
                mandatory: frozenset[str], served: set[str]) -> LeftReason:
    """Why mandatory bin `index` is not in the plan: too big for any truck, too far for the shift, more
    mandatory load than the fleet holds, or (otherwise) no room left in the shift's time."""
    point = problem.bin_point(index)
    if problem.demands[index] > max((truck.capacity_left for truck in problem.trucks), default=0):
        return LeftReason.LARGER_THAN_TRUCK
    if all(truck.free_s + problem.duration_s[truck.point, point] + problem.service_s
           + problem.duration_s[point, 0] > problem.deadline_s for truck in problem.trucks):
        return LeftReason.UNREACHABLE_IN_SHIFT
    mandatory_load = sum(demand for demand, c in zip(problem.demands, routable, strict=True)
                         if c.device_id in mandatory)
    if mandatory_load > sum(max(truck.capacity_left, 0) for truck in problem.trucks):
        return LeftReason.FLEET_CAPACITY
    return LeftReason.SHIFT_TIME


def _route(truck: Truck, number: int, order: tuple[int, ...], problem: RoutingProblem,
           routable: Sequence[BinCandidate], mandatory: frozenset[str], shift: ShiftWindow, home: Place,
           travel: TravelModel, kept: tuple[Stop, ...], departed_ms: int | None, depot_point: int,
           unload_s: int) -> Route:
    start = problem.trucks[number]
    stops = list(kept)
    distance = _kept_distance(home, kept, travel)
    at, now_s, load = start.point, start.free_s, truck.capacity - start.capacity_left
    for index in order:
        point = problem.bin_point(index)
        candidate = routable[index]
        distance += int(problem.distance_m[at, point])
        now_s += int(problem.duration_s[at, point])
        eta_ms = shift.start_ms + now_s * 1000
        load += problem.demands[index]
        stops.append(Stop(device_id=candidate.device_id, lat=candidate.lat or 0.0, lon=candidate.lon or 0.0,
                          eta_ms=eta_ms, expected_fill_pct=round(candidate.fill_at(eta_ms), 1),
                          load_after=load, mandatory=candidate.device_id in mandatory,
                          case_id=candidate.case_id))
        now_s += problem.service_s
        at = point
    depart_ms = departed_ms if departed_ms is not None else shift.start_ms + start.free_s * 1000
    if not stops:
        return Route(truck.truck_id, truck.capacity, depart_ms, (), depart_ms, depart_ms, 0)
    distance += int(problem.distance_m[at, 0]) + int(problem.distance_m[0, depot_point])
    transfer_s = now_s + int(problem.duration_s[at, 0])
    return_s = transfer_s + unload_s + int(problem.duration_s[0, depot_point])
    return Route(truck.truck_id, truck.capacity, depart_ms, tuple(stops), shift.start_ms + transfer_s * 1000,
                 shift.start_ms + return_s * 1000, distance)


def _kept_distance(home: Place, kept: tuple[Stop, ...], travel: TravelModel) -> int:
    if not kept:
        return 0
    distance, _ = travel.matrices([(home.lat, home.lon), *((stop.lat, stop.lon) for stop in kept)])
    return sum(int(distance[index, index + 1]) for index in range(len(kept)))


def kept_stops(plan: Plan, now_ms: int) -> dict[str, tuple[Stop, ...]]:
    """Per truck, what a re-plan keeps: its stops reported done (in the order they were done) and, once it
    has left the depot, the next planned stop after the last one done (it is driving there)."""
    kept: dict[str, tuple[Stop, ...]] = {}
    for route in plan.routes:
        done = sorted((stop for stop in route.stops if stop.status is StopStatus.DONE),
                      key=lambda stop: (stop.done_time_ms or 0, stop.eta_ms))
        last_done = max((number for number, stop in enumerate(route.stops) if stop.status is StopStatus.DONE),
                        default=-1)
        rest = [stop for stop in route.stops[last_done + 1:] if stop.status is not StopStatus.DONE]
        under_way: tuple[Stop, ...] = ()
        if rest and (done or now_ms >= route.depart_ms):
            under_way = (replace(rest[0], status=StopStatus.UNDER_WAY),)
        kept[route.truck_id] = tuple(done) + under_way
    return kept


def replan(plan: Plan, *, depot: DepotSettings, candidates: Sequence[BinCandidate],
           settings: DispatchSettings, travel: TravelModel, now_ms: int,
           solver: Solver | None = pyvrp_solver) -> Plan:
    """The plan's remaining stops planned again from `candidates` (the newest forecasts), keeping what each
    truck has done and where it is driving now."""
    kept = kept_stops(plan, now_ms)
    departed = {route.truck_id: route.depart_ms for route in plan.routes if kept.get(route.truck_id)}
    return plan_shift(plan_id=plan.plan_id, depot=depot, shift=plan.shift, candidates=candidates,
                      settings=settings, travel=travel, now_ms=now_ms, kept=kept, departed=departed,
                      revision=plan.revision + 1, solver=solver)


def mark_done(plan: Plan, device_id: str, done_ms: int) -> Plan | None:
    """The plan with the stop at `device_id` reported done (None: no planned stop there)."""
    routes = []
    found = False
    for route in plan.routes:
        stops = []
        for stop in route.stops:
            if stop.device_id == device_id and stop.status is not StopStatus.DONE:
                stop = replace(stop, status=StopStatus.DONE, done_time_ms=done_ms)
                found = True
            stops.append(stop)
        routes.append(replace(route, stops=tuple(stops)))
    return replace(plan, routes=tuple(routes)) if found else None


def with_reports(plan: Plan, reports: Sequence[StopReport]) -> Plan:
    """The plan with every stop reported done shown done on the truck that reported it. A report that a
    re-plan made at the same time did not see yet is applied here: where the stop is still on that
    truck's route it is marked done in place; where that re-plan moved it to another truck or dropped
    it, it is taken off the other route and kept after the reporting truck's stops done so far."""
    for report in sorted(reports, key=lambda report: report.done_time_ms):
        done_here = any(stop.device_id == report.device_id and stop.status is StopStatus.DONE
                        for route in plan.routes for stop in route.stops)
        if done_here:
            continue
        on_truck = any(stop.device_id == report.device_id for route in plan.routes
                       if route.truck_id == report.truck_id for stop in route.stops)
        if on_truck:
            marked = mark_done(plan, report.device_id, report.done_time_ms)
            plan = marked if marked is not None else plan
            continue
        done = replace(report.stop, status=StopStatus.DONE, done_time_ms=report.done_time_ms)
        routes = []
        for route in plan.routes:
            stops = [stop for stop in route.stops if stop.device_id != report.device_id]
            if route.truck_id == report.truck_id:
                last_done = max((n for n, stop in enumerate(stops) if stop.status is StopStatus.DONE),
                                default=-1)
                stops.insert(last_done + 1, done)
            routes.append(replace(route, stops=tuple(stops)))
        plan = replace(plan, routes=tuple(routes))
    return plan
