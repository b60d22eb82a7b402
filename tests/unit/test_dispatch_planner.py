"""The dispatch planner: which bins a shift must visit, routes within capacity and time, why mandatory
bins are left out, re-planning that keeps what is done, repeatable plans (processors/dispatch/)."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from core.dispatch_settings import DispatchSettings
from core.models import Prediction, Violation
from core.settings import ConfigError, load_settings
from processors.dispatch.candidates import candidates_from, is_mandatory, urgency
from processors.dispatch.export import CSV_COLUMNS, plan_csv, plan_geojson
from processors.dispatch.model import LeftReason, Plan, StopStatus
from processors.dispatch.planner import Solver, mark_done, plan_shift, pyvrp_solver, replan, shift_window
from processors.dispatch.travel import GreatCircleTravel, RoadGraphTravel
from tests.support.dispatch import (
    DAY,
    EARLY_START_MS,
    HOUR_MS,
    assert_within_limits,
    dispatch_settings,
    forecast,
    grid_of_bins,
    open_violation,
    served,
)


def make_plan(settings: DispatchSettings, predictions: Sequence[Prediction],
              violations: Sequence[Violation] = (), *, solver: Solver | None = pyvrp_solver,
              now_ms: int = EARLY_START_MS - HOUR_MS) -> Plan:
    depot = settings.depots[0]
    return plan_shift(plan_id="p", depot=depot, shift=shift_window(depot, "early", DAY, settings.time_zone),
                      candidates=candidates_from(predictions, violations, settings), settings=settings,
                      travel=GreatCircleTravel(settings.speed_kmh, settings.detour_factor), now_ms=now_ms,
                      solver=solver)


def without_timing(plan: Plan) -> Plan:
    return dataclasses.replace(plan, solve_time_s=0.0)


def test_shift_window_in_local_time_with_the_next_window_after_it() -> None:
    settings = dispatch_settings(early=("22:00", "06:00"))
    depot = settings.depots[0]
    night = shift_window(depot, "early", DAY, "Asia/Shanghai")
    late = shift_window(depot, "late", DAY, "Asia/Shanghai")
    assert night.end_ms - night.start_ms == 8 * HOUR_MS  # over midnight
    assert night.next_start_ms == night.start_ms + 16 * HOUR_MS  # tomorrow's 14:00
    assert late.next_start_ms == late.start_ms + 8 * HOUR_MS  # today's 22:00


def test_bins_full_before_the_next_window_are_mandatory_the_others_worth_their_urgency() -> None:
    settings = dispatch_settings()
    shift = shift_window(settings.depots[0], "early", DAY, settings.time_zone)  # next window: +8 h
    soon, later, much_later, full_now, unknown = candidates_from([
        forecast("a-soon", full_in_h=7.5), forecast("b-later", full_in_h=10),
        forecast("c-much-later", full_in_h=40), forecast("d-full", full_in_h=None, fill=95),
        forecast("e-unknown", full_in_h=None, fill=30)], [], settings)
    assert is_mandatory(soon, shift, 90) and is_mandatory(full_now, shift, 90)
    assert not any(is_mandatory(c, shift, 90) for c in (later, much_later, unknown))
    assert urgency(later, shift, 24) > urgency(much_later, shift, 24) > urgency(unknown, shift, 24)
    [overflowing, near_full] = candidates_from(
        [forecast("f-overflow", full_in_h=30), forecast("g-near", full_in_h=30)],
        [open_violation("f-overflow", "bin_overflow"), open_violation("g-near", "bin_near_full")], settings)
    assert is_mandatory(overflowing, shift, 90) and not is_mandatory(near_full, shift, 90)
    assert urgency(near_full, shift, 24) > urgency(much_later, shift, 24)


def test_every_mandatory_bin_is_planned_when_the_fleet_has_room() -> None:
    settings = dispatch_settings(trucks=2, capacity_bins=10)
    mandatory = grid_of_bins(12, full_in_h=3)
    optional = grid_of_bins(4, full_in_h=60, prefix="spare")
    plan = make_plan(settings, mandatory + optional)
    assert plan.solver == "pyvrp" and plan.stopped_by == "iterations"
    assert set(served(plan)) >= {p.device_id for p in mandatory}
    assert plan.left_out == () and plan.figures.mandatory_missed == 0
    assert plan.figures.mandatory_bins == 12
    assert plan.figures.bins_served == len(served(plan)) == 12 + plan.figures.optional_served
    assert plan.figures.distance_m == sum(route.distance_m for route in plan.routes) > 0
    assert_within_limits(plan)


def test_when_the_fleet_is_too_small_the_plan_says_which_bins_were_left_and_why() -> None:
    settings = dispatch_settings(trucks=2, capacity_bins=3)
    plan = make_plan(settings, [*grid_of_bins(8, full_in_h=2), forecast("far", full_in_h=1, lat_offset=2.0),
                                forecast("nowhere", full_in_h=1, located=False)])
    assert len(served(plan)) == 6
    reasons = {left.device_id: left.reason for left in plan.left_out}
    assert reasons.pop("far") is LeftReason.UNREACHABLE_IN_SHIFT  # 220 km away: no truck is back in time
    assert reasons.pop("nowhere") is LeftReason.NO_LOCATION
    assert list(reasons.values()) == [LeftReason.FLEET_CAPACITY] * 2
    assert plan.figures.mandatory_missed == 4
    assert_within_limits(plan)


def test_a_bin_no_truck_can_hold_is_left_as_larger_than_truck() -> None:
    settings = dispatch_settings(trucks=1, capacity_l=1000)
    plan = make_plan(settings, [forecast("small", full_in_h=2, fill=60)], [])
    big = candidates_from([forecast("big", full_in_h=2, fill=90)], [], settings, {"big": 1100.0})
    depot = settings.depots[0]
    both = plan_shift(plan_id="p", depot=depot, shift=plan.shift,
                      candidates=[*candidates_from([forecast("small", full_in_h=2, fill=60)], [], settings),
                                  *big], settings=settings, travel=GreatCircleTravel(25, 1.3),
                      now_ms=EARLY_START_MS)
    assert served(both) == ["small"]
    assert [(left.device_id, left.reason) for left in both.left_out] == [
        ("big", LeftReason.LARGER_THAN_TRUCK)]
    # Litres at the shift's end: 240 l at 60% + 8 h x 5%/h = 100% -> 240.
    assert both.routes[0].load == 240 and both.capacity_unit.value == "litres"


def test_a_short_shift_serves_what_fits_in_time_and_names_the_rest_shift_time() -> None:
    settings = dispatch_settings(trucks=1, capacity_bins=100, early=("06:00", "07:00"), service_s=300)
    plan = make_plan(settings, grid_of_bins(16, full_in_h=0.5))
    assert 0 < len(served(plan)) < 16
    assert {left.reason for left in plan.left_out} == {LeftReason.SHIFT_TIME}
    assert len(plan.left_out) + len(served(plan)) == 16
    assert_within_limits(plan)


def test_bins_on_fire_tilted_or_offline_are_flagged_for_a_person_not_routed() -> None:
    settings = dispatch_settings()
    plan = make_plan(settings, grid_of_bins(4, full_in_h=2),
                     [open_violation("bin-000", "bin_fire"), open_violation("bin-001", "bin_tilt"),
                      open_violation("bin-001", "device_offline")])
    assert served(plan) == ["bin-002", "bin-003"]
    assert [(f.device_id, f.flags) for f in plan.flagged] == [
        ("bin-000", ("bin_fire",)), ("bin-001", ("bin_tilt", "device_offline"))]
    assert plan.figures.flagged == 2 and plan.left_out == ()


def test_the_same_inputs_give_the_same_plan() -> None:
    settings = dispatch_settings(trucks=3, capacity_bins=12)
    predictions = grid_of_bins(30, full_in_h=3) + grid_of_bins(9, full_in_h=30, prefix="spare")
    first, second = make_plan(settings, predictions), make_plan(settings, list(reversed(predictions)))
    assert without_timing(first) == without_timing(second)
    city = ZoneInfo("Asia/Shanghai")
    assert plan_csv(first, city) == plan_csv(second, city)


def test_the_nearest_neighbour_fallback_keeps_capacity_and_time() -> None:
    settings = dispatch_settings(trucks=2, capacity_bins=5)
    plan = make_plan(settings, grid_of_bins(9, full_in_h=2), solver=None)
    assert plan.solver == "nearest_neighbour"
    assert len(served(plan)) == 9 and plan.left_out == ()
    assert_within_limits(plan)
    pyvrp = make_plan(settings, grid_of_bins(9, full_in_h=2))
    assert pyvrp.figures.distance_m <= plan.figures.distance_m


def test_replanning_keeps_done_stops_and_the_one_under_way_and_adds_a_bin_that_crossed() -> None:
    settings = dispatch_settings(trucks=2, capacity_bins=10)
    predictions = grid_of_bins(10, full_in_h=3)
    plan = make_plan(settings, predictions)
    truck = next(route for route in plan.routes if len(route.stops) >= 3)
    first, second = truck.stops[0], truck.stops[1]
    done = mark_done(plan, first.device_id, first.eta_ms + 60_000)
    assert done is not None and mark_done(done, first.device_id, first.eta_ms) is None
    # Mid-shift a bin nobody planned for is now predicted to overflow before the next window.
    crossed = forecast("newly-urgent", full_in_h=4, lat_offset=0.003, lon_offset=0.009)
    depot = settings.depots[0]
    later = replan(done, depot=depot, settings=settings, travel=GreatCircleTravel(25, 1.3),
                   now_ms=first.eta_ms + 120_000,
                   candidates=candidates_from([*predictions, crossed], [], settings))
    route = next(route for route in later.routes if route.truck_id == truck.truck_id)
    assert route.stops[0] == dataclasses.replace(first, status=StopStatus.DONE,
                                                 done_time_ms=first.eta_ms + 60_000)
    assert route.stops[1] == dataclasses.replace(second, status=StopStatus.UNDER_WAY)
    assert route.depart_ms == truck.depart_ms
    assert "newly-urgent" in served(later) and set(served(later)) >= {p.device_id for p in predictions}
    assert served(later).count(first.device_id) == 1
    assert later.revision == 2 and later.figures.mandatory_missed == 0
    assert_within_limits(later)


def test_plans_as_csv_and_geojson() -> None:
    settings = dispatch_settings(trucks=1, capacity_bins=10)
    plan = make_plan(settings, grid_of_bins(3, full_in_h=2), [open_violation("bin-002", "bin_fire")])
    rows = plan_csv(plan, ZoneInfo("Asia/Shanghai")).splitlines()
    assert rows[0] == ",".join(CSV_COLUMNS)
    assert [row.split(",")[4:6] for row in rows[1:]] == [
        [str(number), stop.device_id] for number, stop in enumerate(plan.routes[0].stops, start=1)]
    # The arrival in the city's time zone, next to its epoch ms: the same instant, UTC+8 in Shenzhen.
    eta_ms, eta_local = (rows[1].split(",")[CSV_COLUMNS.index(name)] for name in ("eta_ms", "eta_local"))
    assert eta_local.endswith("+08:00")
    assert datetime.fromisoformat(eta_local).timestamp() * 1000 == int(eta_ms)
    features = plan_geojson(plan)["features"]
    kinds = [feature["properties"]["kind"] for feature in features]
    assert kinds == ["depot", "transfer_station", "route", "stop", "stop", "flagged"]
    line = features[2]["geometry"]["coordinates"]
    assert line[0] == line[-1] == [settings.depots[0].lon, settings.depots[0].lat]
    assert features[3]["properties"]["case_id"] is None
    json.dumps(plan_geojson(plan))


def test_road_graph_travel_follows_the_roads_one_way_where_they_say(tmp_path: Path) -> None:
    # An L-shaped road from A (south-west) via a corner to B (north-east); its first leg one way A -> corner.
    a, corner, b = (114.00, 22.50), (114.01, 22.50), (114.01, 22.51)
    roads = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"oneway": True}, "geometry": {"type": "LineString",
                                                                         "coordinates": [a, corner]}},
        {"type": "Feature", "properties": {"speed_kmh": 50}, "geometry": {"type": "LineString",
                                                                          "coordinates": [corner, b]}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "LineString",
                                                           "coordinates": [b, (114.00, 22.51), a]}}]}
    path = tmp_path / "roads.geojson"
    path.write_text(json.dumps(roads))
    travel = RoadGraphTravel.from_file(path, speed_kmh=25, detour_factor=1.3)
    distance, duration = travel.matrices([(a[1], a[0]), (b[1], b[0])])
    straight, _ = GreatCircleTravel(25, 1.0).matrices([(a[1], a[0]), (b[1], b[0])])
    # A -> B along the L (about 1.03 km + 1.11 km): longer than the straight line, faster on the 50 km/h leg.
    assert 2100 < distance[0, 1] < 2200 and distance[0, 1] > straight[0, 1] * 1.35
    assert duration[0, 1] < duration[1, 0]  # B -> A cannot use the one-way leg: the slower way round
    with pytest.raises(ValueError, match="not a LineString"):
        RoadGraphTravel([{"geometry": {"type": "Point", "coordinates": a}}], speed_kmh=25, detour_factor=1)


def test_settings_refuse_what_cannot_be_planned() -> None:
    base = dispatch_settings().model_dump()
    depot = base["depots"][0]
    for change, message in [
        ({"trucks": [{"truck_id": "T1", "capacity_bins": 5, "capacity_l": 900}]}, "exactly one of"),
        ({"trucks": [{"truck_id": "T1", "capacity_bins": 5}, {"truck_id": "T2", "capacity_l": 900}]},
         "all capacity_bins"),
        ({"shifts": [{"shift_id": "s", "start": "6:00", "end": "14:00"}]}, "HH:MM"),
    ]:
        with pytest.raises(ValidationError, match=message):
            DispatchSettings.model_validate({**base, "depots": [{**depot, **change}]})
    with pytest.raises(ValidationError, match="unknown time zone"):
        DispatchSettings.model_validate({**base, "time_zone": "Mars/Olympus"})


def test_the_road_graph_path_is_taken_beside_the_configuration_and_must_exist(tmp_path: Path) -> None:
    (tmp_path / "geo").mkdir()
    (tmp_path / "geo" / "roads.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    config = tmp_path / "city.yaml"
    config.write_text("dispatch:\n  road_graph_file: geo/roads.geojson\n")
    assert load_settings(config, environ={}).dispatch.road_graph_file == tmp_path / "geo" / "roads.geojson"
    config.write_text("dispatch:\n  road_graph_file: geo/missing.geojson\n")
    with pytest.raises(ConfigError, match=r"dispatch\.road_graph_file: .* does not exist"):
        load_settings(config, environ={})


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("solver", [pyvrp_solver, None], ids=["pyvrp", "nearest_neighbour"])
def test_random_cities_never_break_a_capacity_or_the_shift(seed: int, solver: Solver | None) -> None:
    rnd = random.Random(seed)
    in_litres = seed % 2 == 1
    settings = dispatch_settings(
        trucks=rnd.randint(1, 3), capacity_bins=None if in_litres else rnd.randint(2, 8),
        capacity_l=rnd.choice([800.0, 1500.0]) if in_litres else None,
        early=("06:00", rnd.choice(["07:00", "08:30", "14:00"])), service_s=rnd.choice([60, 300]))
    predictions = [forecast(f"bin-{n:02d}", full_in_h=rnd.choice([None, 1, 5, 9, 30]),
                            fill=rnd.uniform(10, 95), lat_offset=rnd.uniform(-0.03, 0.03),
                            lon_offset=rnd.uniform(-0.03, 0.03)) for n in range(rnd.randint(5, 25))]
    plan = make_plan(settings, predictions, solver=solver)
    assert_within_limits(plan)
    planned = served(plan)
    assert len(planned) == len(set(planned))
    left = {left.device_id for left in plan.left_out}
    assert left.isdisjoint(planned) and left | (set(planned) & plan.mandatory) == set(plan.mandatory)
    assert plan.figures.mandatory_missed == len(left)
