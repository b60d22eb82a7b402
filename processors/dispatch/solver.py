"""Routes over an indexed problem: PyVRP's iterated local search, or a nearest-neighbour heuristic.

Both see the same `RoutingProblem`: point 0 is the transfer station where every route ends, points
1..k the trucks' starting points, the rest the bins. Times are seconds after the shift start, distances
metres, loads in the trucks' capacity unit. Each returns, per truck, the bins in visiting order.

PyVRP (MIT, PyPI `pyvrp`) was measured against OR-Tools' routing solver on 5,000 bins and 20 trucks
(bench/dispatch.py, BENCHMARKS.md) and chosen for it; the nearest-neighbour heuristic is the fallback
when PyVRP is missing or finds nothing feasible, and the benchmark's baseline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from processors.dispatch.travel import Matrix

# A mandatory bin is worth more than any route is long (10,000 km): the solver drops one only when no
# feasible plan has it, and the plan then says why (planner.left_reason).
MANDATORY_PRIZE = 10_000_000_000
# Granular neighbourhood: moves are tried between each bin and this many of its nearest bins.
NEIGHBOURS = 20


@dataclass(frozen=True)
class TruckStart:
    point: int
    free_s: int
    capacity_left: int


@dataclass(frozen=True)
class RoutingProblem:
    distance_m: Matrix
    duration_s: Matrix
    trucks: tuple[TruckStart, ...]
    # Per bin (point len(trucks) + 1 + i): its demand, prize (MANDATORY_PRIZE for mandatory bins).
    demands: tuple[int, ...]
    prizes: tuple[int, ...]
    service_s: int
    # Latest arrival at the transfer station (unload there and drive back to the depot by the shift end).
    deadline_s: int
    # Every point's (x, y) in metres on a local plane (travel.plane_m), for angles around the depot.
    positions: npt.NDArray[np.float64]

    def bin_point(self, index: int) -> int:
        return 1 + len(self.trucks) + index


@dataclass(frozen=True)
class Solved:
    orders: tuple[tuple[int, ...], ...]
    solver: str
    stopped_by: str
    seconds: float


def solve_nearest_neighbour(problem: RoutingProblem) -> Solved:
    """Truck by truck (in fleet order) to the nearest bin that still fits in its capacity and shift:
    mandatory bins first, then optional bins worth their detour. Deterministic (ties: lowest index)."""
    began = time.perf_counter()
    count = len(problem.demands)
    served = np.zeros(count, dtype=bool)
    demands = np.asarray(problem.demands, dtype=np.int64)
    prizes = np.asarray(problem.prizes, dtype=np.int64)
    mandatory = prizes >= MANDATORY_PRIZE
    first_bin = 1 + len(problem.trucks)
    bins = slice(first_bin, first_bin + count)
    to_transfer = problem.duration_s[bins, 0]
    distance_to_transfer = problem.distance_m[bins, 0]
    orders = []
    for truck in problem.trucks:
        at, now, room = truck.point, truck.free_s, truck.capacity_left
        order: list[int] = []
        while True:
            arrive = now + problem.duration_s[at, bins]
            in_time = arrive + problem.service_s + to_transfer <= problem.deadline_s
            fits = (~served) & (demands <= room) & in_time
            distance = problem.distance_m[at, bins]
            pick = _nearest(fits & mandatory, distance)
            if pick is None:
                detour = distance + distance_to_transfer - problem.distance_m[at, 0]
                pick = _nearest(fits & ~mandatory & (prizes > detour), distance)
            if pick is None:
                break
            order.append(pick)
            served[pick] = True
            now = int(arrive[pick]) + problem.service_s
            room -= int(demands[pick])
            at = first_bin + pick
        orders.append(tuple(order))
    return Solved(tuple(orders), "nearest_neighbour", "complete", time.perf_counter() - began)


def sweep_start(problem: RoutingProblem) -> list[list[int]]:
    """Mandatory bins cut into angular sectors around the first truck's start, one sector per truck as far
    as its capacity goes, each visited nearest first; a bin its truck has no time for goes on to the next
    truck. The solver's start on large plans: compact routes (it adds the optional bins worth it)."""
    count = len(problem.demands)
    mandatory = [index for index in range(count) if problem.prizes[index] >= MANDATORY_PRIZE]
    if not mandatory or not problem.trucks:
        return [[] for _ in problem.trucks]
    centre = problem.positions[problem.trucks[0].point]
    offsets = problem.positions[[problem.bin_point(index) for index in mandatory]] - centre
    angles = np.arctan2(offsets[:, 1], offsets[:, 0])
    by_angle = np.lexsort((np.asarray(mandatory), angles))
    ordered = [mandatory[position] for position in by_angle]
    # Start after the widest empty angle, so that no dense area is split between the first and last truck.
    sorted_angles = angles[by_angle]
    gaps = np.diff(np.append(sorted_angles, sorted_angles[0] + 2 * np.pi))
    cut = int(gaps.argmax()) + 1
    queue = ordered[cut:] + ordered[:cut]
    orders = []
    for truck in problem.trucks:
        sector: list[int] = []
        room = truck.capacity_left
        while len(sector) < len(queue) and problem.demands[queue[len(sector)]] <= room:
            room -= problem.demands[queue[len(sector)]]
            sector.append(queue[len(sector)])
        route = _nearest_order(problem, truck, sector)
        kept = set(route)
        queue = [index for index in sector if index not in kept] + queue[len(sector):]
        orders.append(route)
    return orders


def _nearest_order(problem: RoutingProblem, truck: TruckStart, sector: list[int]) -> list[int]:
    """The sector's bins nearest first from the truck's start, as long as the shift has time for them."""
    points = np.asarray([problem.bin_point(index) for index in sector], dtype=np.int64)
    left = np.ones(len(sector), dtype=bool)
    at, now, route = truck.point, truck.free_s, []
    while left.any():
        arrive = now + problem.duration_s[at, points]
        in_time = left & (arrive + problem.service_s + problem.duration_s[points, 0] <= problem.deadline_s)
        pick = _nearest(in_time, problem.distance_m[at, points])
        if pick is None:
            break
        left[pick] = False
        route.append(sector[pick])
        now = int(arrive[pick]) + problem.service_s
        at = int(points[pick])
    return route


def _nearest(allowed: npt.NDArray[np.bool_], distance: npt.NDArray[np.int64]) -> int | None:
    if not allowed.any():
        return None
    masked = np.where(allowed, distance, np.iinfo(np.int64).max)
    return int(masked.argmin())


def solve_pyvrp(problem: RoutingProblem, *, iterations: int, time_budget_s: float,
                seed: int) -> Solved | None:
    """PyVRP's best plan; None when PyVRP is not installed or found nothing feasible.

    The search covers the whole fleet (which truck takes which bin, and in what order) and stops after
    `iterations` or at the time budget; segment reversals (two_opt) then undo the crossings it left,
    which PyVRP's moves do not try and which it leaves many of on thousands of bins in seconds.
    """
    try:
        import pyvrp  # noqa: F401 - only to know it is there
    except ImportError:
        return None
    began = time.perf_counter()
    trucks = list(range(len(problem.trucks)))
    everything = list(range(len(problem.demands)))
    if not everything:
        return Solved(tuple(() for _ in trucks), "pyvrp", "complete", 0.0)
    # Started from the better of two quick plans (sectors around the depot; nearest neighbour), each
    # with its routes' crossings undone: on thousands of bins the search then spends its budget on what
    # those miss instead of building routes from its own random start.
    starts = [[two_opt(problem, problem.trucks[number], list(order)) for number, order in enumerate(orders)]
              for orders in (sweep_start(problem), solve_nearest_neighbour(problem).orders)]
    start = min(starts, key=lambda orders: objective(problem, orders))
    # The budget covers the whole call: the search gets what the starts left, less a reserve for undoing
    # the crossings it leaves (about as long as one start's took).
    spent_s = time.perf_counter() - began
    fleet = _search(problem, trucks, everything, start, iterations=iterations,
                    seconds=time_budget_s - spent_s * 1.5, seed=seed, optional=True)
    if fleet is None:
        return None
    orders, complete = fleet
    for number, order in enumerate(orders):
        orders[number] = two_opt(problem, problem.trucks[number], order)
    return Solved(tuple(tuple(order) for order in orders), "pyvrp",
                  "iterations" if complete else "time_budget", time.perf_counter() - began)


def objective(problem: RoutingProblem, orders: list[list[int]]) -> int:
    """What the solver minimises: distance driven (to the transfer station) less the prizes collected."""
    total = 0
    for truck, order in zip(problem.trucks, orders, strict=True):
        path = [truck.point, *(problem.bin_point(index) for index in order), 0]
        total += int(problem.distance_m[path[:-1], path[1:]].sum()) if order else 0
        total -= sum(problem.prizes[index] for index in order)
    return total


def two_opt(problem: RoutingProblem, truck: TruckStart, order: list[int]) -> list[int]:
    """The route with every segment reversal that shortens it applied (best per first bin, until none is
    left), as long as it still reaches the transfer station in time. Loads do not depend on the order
    (bins are only picked up), so capacity holds. Deterministic; PyVRP's moves do not reverse segments.
    """
    route = [truck.point, *(problem.bin_point(index) for index in order), 0]
    back = {problem.bin_point(index): index for index in order}
    allowed_s = problem.deadline_s - truck.free_s - problem.service_s * len(order)
    improved = True
    while improved:
        improved = False
        for first in range(1, len(route) - 2):
            path = np.asarray(route, dtype=np.int64)
            distance = _reversal_deltas(problem.distance_m, path, first)
            duration = _reversal_deltas(problem.duration_s, path, first)
            travel_s = int(problem.duration_s[path[:-1], path[1:]].sum())
            distance[travel_s + duration > allowed_s] = 0
            best = int(distance.argmin())
            if distance[best] < 0:
                last = first + 1 + best
                route[first:last + 1] = route[first:last + 1][::-1]
                improved = True
    return [back[point] for point in route[1:-1]]


def _reversal_deltas(matrix: Matrix, path: npt.NDArray[np.int64], first: int) -> npt.NDArray[np.int64]:
    """Change in total cost when path[first..last] is reversed, for every last in first+1 .. len-2."""
    forward = np.concatenate(([0], np.cumsum(matrix[path[:-1], path[1:]])))
    backward = np.concatenate(([0], np.cumsum(matrix[path[1:], path[:-1]])))
    lasts = np.arange(first + 1, len(path) - 1)
    before, after = path[first - 1], path[lasts + 1]
    removed = matrix[before, path[first]] + matrix[path[lasts], after] + forward[lasts] - forward[first]
    added = matrix[before, path[lasts]] + matrix[path[first], after] + backward[lasts] - backward[first]
    result: npt.NDArray[np.int64] = added - removed
    return result


def _search(problem: RoutingProblem, trucks: list[int], bins: list[int], start: list[list[int]], *,
            iterations: int, seconds: float, seed: int,
            optional: bool) -> tuple[list[list[int]], bool] | None:
    """PyVRP over some trucks and bins (indices into `problem`), from `start` (per truck, its bins).

    `optional`: bins may be left out (mandatory ones carry MANDATORY_PRIZE); otherwise all must stay.
    Returns per truck its bins in order and whether the iterations (not the time) stopped the search;
    None when the best plan found breaks a capacity or a time window.
    """
    import pyvrp
    from pyvrp.search import NeighbourhoodParams
    from pyvrp.stop import MaxIterations, MaxRuntime, MultipleCriteria

    points = [0, *(problem.trucks[number].point for number in trucks), *(problem.bin_point(b) for b in bins)]
    if len(points) == problem.distance_m.shape[0] - 1 and points == list(range(len(points))):
        distance, duration = problem.distance_m, problem.duration_s
    else:
        grid = np.ix_(points, points)
        distance, duration = problem.distance_m[grid], problem.duration_s[grid]
    first = 1 + len(trucks)
    locations = [pyvrp.Location(x=0, y=0) for _ in range(distance.shape[0])]
    depots = [pyvrp.Depot(location=0)] + [pyvrp.Depot(location=1 + slot) for slot in range(len(trucks))]
    clients = [pyvrp.Client(location=first + slot, pickup=[problem.demands[index]],
                            service_duration=problem.service_s,
                            prize=problem.prizes[index] if optional else 0, required=not optional)
               for slot, index in enumerate(bins)]
    vehicles = []
    for slot, number in enumerate(trucks):
        truck = problem.trucks[number]
        vehicles.append(pyvrp.VehicleType(
            num_available=1, capacity=[max(truck.capacity_left, 0)], start_depot=1 + slot, end_depot=0,
            tw_early=truck.free_s, start_late=truck.free_s, tw_late=max(problem.deadline_s, truck.free_s)))
    matrices: dict[str, Any] = {"distance_matrices": [distance], "duration_matrices": [duration]}
    data = pyvrp.ProblemData(locations=locations, clients=clients, depots=depots, vehicle_types=vehicles,
                             **matrices)
    slot_of = {index: slot for slot, index in enumerate(bins)}
    visit = pyvrp.ActivityType.CLIENT
    initial = pyvrp.Solution(data, [
        pyvrp.Route(data, [pyvrp.Activity(visit, slot_of[index]) for index in order], slot)
        for slot, order in enumerate(start) if order])
    params = pyvrp.SolveParams(neighbourhood=NeighbourhoodParams(num_neighbours=min(NEIGHBOURS, len(bins))))
    stop = MultipleCriteria([MaxIterations(iterations), MaxRuntime(max(seconds, 0.001))])
    result = pyvrp.solve(data, stop=stop, seed=seed, collect_stats=False, initial_solution=initial,
                         params=params)
    if not result.best.is_feasible():
        return None
    orders: list[list[int]] = [[] for _ in trucks]
    for route in result.best.routes():
        orders[route.vehicle_type()] = [bins[activity.idx] for activity in route.schedule()
                                        if activity.type == visit]
    return orders, result.num_iterations >= iterations
