"""Dispatch plans for 5,000 bins and 20 trucks: plan time and total distance, solver against the
nearest-neighbour baseline (processors/dispatch/, docs/dispatch.md).

A synthetic city (default: 5,000 bins spread over 18 x 14 km of Shenzhen in street-like clusters, one
depot, one transfer station, 20 trucks of 260 bins each, a 06:00-16:00 shift, 45 s per bin, great-circle
distance x 1.3 at 25 km/h). Every bin is forecast full before the next shift, so every plan must serve
all of them and distances compare like for like. Each solver gets the same inputs; plan time is the whole
`plan_shift` call (travel matrices, problem, solve, routes).

    .venv/bin/python -m bench.dispatch [--bins 5000] [--trucks 20] [--budget-s 22]
                                       [--solvers nearest,pyvrp,ortools]

OR-Tools (PyPI `ortools`) is only needed for `--solvers ortools`: it was measured to choose between the
two and is not a dependency.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import time
from typing import Any

from core.dispatch_settings import DispatchSettings
from core.models import Location, Prediction
from processors.dispatch.candidates import candidates_from
from processors.dispatch.model import Plan
from processors.dispatch.planner import Solver, plan_shift, pyvrp_solver, shift_window
from processors.dispatch.solver import RoutingProblem, Solved
from processors.dispatch.travel import GreatCircleTravel

LAT0, LON0, LAT1, LON1 = 22.50, 113.90, 22.63, 114.08
DAY = dt.date(2026, 12, 7)


def city(bins: int, trucks: int, seed: int = 7) -> tuple[DispatchSettings, list[Prediction]]:
    rnd = random.Random(seed)
    settings = DispatchSettings.model_validate({
        "time_zone": "Asia/Shanghai", "service_s": 45, "iterations": 10**9,
        "depots": [{
            "depot_id": "futian", "lat": 22.535, "lon": 114.02,
            "transfer_station": {"station_id": "xiaping", "lat": 22.61, "lon": 113.93, "unload_s": 900},
            "trucks": [{"truck_id": f"T{number:02d}", "capacity_bins": 260} for number in range(trucks)],
            "shifts": [{"shift_id": "day", "start": "06:00", "end": "16:00"},
                       {"shift_id": "night", "start": "20:00", "end": "23:00"}],
        }],
    })
    centres = [(rnd.uniform(LAT0, LAT1), rnd.uniform(LON0, LON1)) for _ in range(max(1, bins // 40))]
    start_ms = shift_window(settings.depots[0], "day", DAY, settings.time_zone).start_ms
    predictions = []
    for number in range(bins):
        lat, lon = rnd.choice(centres)
        predictions.append(Prediction(
            type="bin_full", device_id=f"bin-{number:05d}", computed_time_ms=start_ms - 600_000,
            predicted_time_ms=start_ms + rnd.randint(1, 12) * 3_600_000, value=rnd.uniform(40, 80),
            details={"slope_pct_per_h": rnd.uniform(1, 5)},
            location=Location(lat + rnd.gauss(0, 0.004), lon + rnd.gauss(0, 0.004))))
    return settings, predictions


def ortools_solver(problem: RoutingProblem, settings: DispatchSettings) -> Solved | None:
    """OR-Tools' routing solver on the same problem: cheapest-arc start, guided local search."""
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    began = time.perf_counter()
    size = problem.distance_m.shape[0] - 1  # the last point is the depot, only for the return leg
    first_bin = 1 + len(problem.trucks)
    manager = pywrapcp.RoutingIndexManager(size, len(problem.trucks), [t.point for t in problem.trucks],
                                           [0] * len(problem.trucks))
    routing = pywrapcp.RoutingModel(manager)
    distance = problem.distance_m[:size, :size].tolist()
    service = [problem.service_s if node >= first_bin else 0 for node in range(size)]
    duration = [[cost + service[row] for cost in line]
                for row, line in enumerate(problem.duration_s[:size, :size].tolist())]
    routing.SetArcCostEvaluatorOfAllVehicles(routing.RegisterTransitMatrix(distance))
    demands = [0] * first_bin + list(problem.demands)
    load = routing.RegisterUnaryTransitVector(demands)
    routing.AddDimensionWithVehicleCapacity(load, 0, [max(t.capacity_left, 0) for t in problem.trucks],
                                            True, "load")
    times = routing.RegisterTransitMatrix(duration)
    routing.AddDimension(times, 0, problem.deadline_s, False, "time")
    clock = routing.GetDimensionOrDie("time")
    for vehicle, truck in enumerate(problem.trucks):
        clock.CumulVar(routing.Start(vehicle)).SetRange(truck.free_s, truck.free_s)
        clock.CumulVar(routing.End(vehicle)).SetMax(problem.deadline_s)
    for index, prize in enumerate(problem.prizes):
        routing.AddDisjunction([manager.NodeToIndex(first_bin + index)], prize)
    parameters = pywrapcp.DefaultRoutingSearchParameters()
    parameters.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PATH_CHEAPEST_ARC
    parameters.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    left_s = max(0.1, settings.time_budget_s - (time.perf_counter() - began))
    parameters.time_limit.FromMilliseconds(int(left_s * 1000))
    solution = routing.SolveWithParameters(parameters)
    if solution is None:
        return None
    orders = []
    for vehicle in range(len(problem.trucks)):
        order = []
        index = solution.Value(routing.NextVar(routing.Start(vehicle)))
        while not routing.IsEnd(index):
            order.append(manager.IndexToNode(index) - first_bin)
            index = solution.Value(routing.NextVar(index))
        orders.append(tuple(order))
    return Solved(tuple(orders), "ortools", "time_budget", time.perf_counter() - began)


SOLVERS: dict[str, Solver | None] = {"nearest": None, "pyvrp": pyvrp_solver, "ortools": ortools_solver}


def run(name: str, settings: DispatchSettings, predictions: list[Prediction]) -> tuple[Plan, float]:
    depot = settings.depots[0]
    shift = shift_window(depot, "day", DAY, settings.time_zone)
    candidates = candidates_from(predictions, [], settings)
    travel = GreatCircleTravel(settings.speed_kmh, settings.detour_factor)
    began = time.perf_counter()
    plan = plan_shift(plan_id="bench", depot=depot, shift=shift, candidates=candidates, settings=settings,
                      travel=travel, now_ms=shift.start_ms - 3_600_000, solver=SOLVERS[name])
    return plan, time.perf_counter() - began


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bins", type=int, default=5000)
    parser.add_argument("--trucks", type=int, default=20)
    parser.add_argument("--budget-s", type=float, default=22.0, help="solver time budget per plan")
    parser.add_argument("--solvers", default="nearest,pyvrp,ortools")
    args = parser.parse_args(argv)
    settings, predictions = city(args.bins, args.trucks)
    settings = settings.model_copy(update={"time_budget_s": args.budget_s})
    print(f"{platform.python_version()} on {os.cpu_count()} cpus, load average {os.getloadavg()}")
    baseline: float | None = None
    for name in args.solvers.split(","):
        plan, seconds = run(name, settings, predictions)
        figures: dict[str, Any] = vars(plan.figures)
        km = figures["distance_m"] / 1000
        if name == "nearest":
            baseline = km
        shorter = ""
        if baseline and name != "nearest":
            shorter = f", {100 * (1 - km / baseline):.1f}% shorter than nearest"
        print(f"{name:8s} ({plan.solver}, stopped by {plan.stopped_by}): plan {seconds:.1f} s, {km:,.1f} km, "
              f"{figures['bins_served']} bins served, mandatory missed {figures['mandatory_missed']}"
              f"{shorter}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
