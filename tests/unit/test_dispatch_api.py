"""/v1/dispatch over a real SQLite store: plan a shift from the stored forecasts, read it as JSON, CSV and
GeoJSON, report stops done and re-plan; problems for what does not exist (docs/dispatch.md)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.services import ApiServices
from core.metrics import Metrics
from processors.dispatch.board import PlanBoard
from processors.outputs.feed import ViolationFeed
from store.sqlite_store import SqliteStore
from tests.support.dispatch import (
    EARLY_PLAN,
    EARLY_START_MS,
    HOUR_MS,
    dispatch_settings,
    forecast,
    grid_of_bins,
    open_violation,
)
from tests.support.wait import wait_for


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> float:
        return self.now_ms / 1000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore.in_directory(tmp_path)
    store.write_predictions(grid_of_bins(6, full_in_h=3) + grid_of_bins(2, full_in_h=50, prefix="spare"))
    store.write_violations([open_violation("bin-005", "bin_tilt")])
    store.flush()
    yield store
    store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock(EARLY_START_MS - HOUR_MS)


@pytest.fixture
def client(store: SqliteStore, clock: Clock) -> Iterator[TestClient]:
    board = PlanBoard(dispatch_settings(trucks=2, capacity_bins=4), clock=clock)
    with TestClient(create_app(ApiServices(store=store, metrics=Metrics(), dispatch=board))) as client:
        yield client


def make(client: TestClient) -> dict:
    response = client.post("/v1/dispatch/plans", json={"depot_id": "futian", "shift_id": "early",
                                                       "date": "2026-12-07"})
    assert response.status_code == 201, response.text
    return response.json()


def test_a_shift_is_planned_from_the_stored_forecasts_and_read_back_in_three_formats(client) -> None:
    plan = make(client)
    assert plan["plan_id"] == "2026-12-07.futian.early" and plan["revision"] == 1
    stops = [stop for route in plan["routes"] for stop in route["stops"]]
    assert {stop["device_id"] for stop in stops} >= {f"bin-00{n}" for n in range(5)}
    assert [(f["device_id"], f["flags"]) for f in plan["flagged"]] == [("bin-005", ["bin_tilt"])]
    assert plan["figures"]["mandatory_missed"] == 0 and plan["left_out"] == []
    assert plan["figures"]["bins_served"] == len(stops)
    assert all(route["load"] <= route["capacity"] == 4 for route in plan["routes"])
    assert plan["capacity_unit"] == "bins" and plan["shift"]["start_ms"] == EARLY_START_MS
    first = stops[0]
    assert first["status"] == "planned" and first["case_id"] is None
    assert 50 <= first["expected_fill_pct"] <= 100

    assert client.get(EARLY_PLAN).json() == plan
    assert [item["plan_id"] for item in client.get("/v1/dispatch/plans").json()["items"]] == [plan["plan_id"]]
    as_csv = client.get(f"{EARLY_PLAN}/stops.csv")
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [row["device_id"] for row in rows] == [stop["device_id"] for stop in stops]
    as_map = client.get(f"{EARLY_PLAN}/map.geojson")
    assert as_map.headers["content-type"] == "application/geo+json"
    kinds = [feature["properties"]["kind"] for feature in as_map.json()["features"]]
    assert kinds.count("route") == sum(1 for route in plan["routes"] if route["stops"])
    assert kinds.count("stop") == len(stops) and kinds.count("flagged") == 1


def test_a_stop_reported_done_stays_done_and_the_rest_is_replanned_with_new_forecasts(client, store,
                                                                                        clock) -> None:
    plan = make(client)
    route = next(route for route in plan["routes"] if len(route["stops"]) >= 2)
    done, next_stop = route["stops"][0], route["stops"][1]
    clock.now_ms = done["eta_ms"] + 30_000
    # A bin not in the first plan now predicted to overflow before the late shift starts.
    store.write_predictions([forecast("bin-new", full_in_h=4, lat_offset=0.002, lon_offset=0.002,
                                      at_ms=clock.now_ms)])
    store.flush()
    answer = client.post(f"{EARLY_PLAN}/stops/{done['device_id']}/done")
    assert answer.status_code == 200, answer.text
    after = answer.json()
    same_truck = next(r for r in after["routes"] if r["truck_id"] == route["truck_id"])
    assert same_truck["stops"][0] == {**done, "status": "done", "done_time_ms": done["eta_ms"] + 30_000}
    assert same_truck["stops"][1] == {**next_stop, "status": "under_way"}
    assert after["revision"] == 2 and after["figures"]["mandatory_missed"] == 0
    assert "bin-new" in {s["device_id"] for r in after["routes"] for s in r["stops"] if s["mandatory"]}
    assert client.get(EARLY_PLAN).json() == after

    again = client.post(f"{EARLY_PLAN}/stops/{done['device_id']}/done")
    assert again.status_code == 409 and again.json()["type"] == "urn:citywatch:problem:conflict"
    replanned = client.post(f"{EARLY_PLAN}/replan").json()
    assert replanned["revision"] == 3
    assert next(r for r in replanned["routes"] if r["truck_id"] == route["truck_id"])["stops"][:2] == \
        same_truck["stops"][:2]


def test_what_does_not_exist_is_a_not_found_problem(client) -> None:
    for body in ({"depot_id": "nowhere", "shift_id": "early"}, {"depot_id": "futian", "shift_id": "noon"}):
        response = client.post("/v1/dispatch/plans", json=body)
        assert response.status_code == 404 and response.json()["type"] == "urn:citywatch:problem:not-found"
    assert client.post("/v1/dispatch/plans", json={"depot_id": "futian", "shift_id": "early",
                                                   "trucks": 3}).status_code == 422
    for path in ("/v1/dispatch/plans/x", "/v1/dispatch/plans/x/stops.csv",
                 "/v1/dispatch/plans/x/map.geojson"):
        assert client.get(path).status_code == 404
    assert client.post("/v1/dispatch/plans/x/replan").status_code == 404
    make(client)
    missing = client.post(f"{EARLY_PLAN}/stops/not-a-stop/done")
    assert missing.status_code == 404 and "not-a-stop" in missing.json()["detail"]


def test_a_plan_without_a_date_is_for_today_in_the_dispatch_time_zone(client, clock) -> None:
    clock.now_ms = EARLY_START_MS - 5 * HOUR_MS  # 01:00 on 2026-12-07 in Shanghai, still the 6th in UTC
    response = client.post("/v1/dispatch/plans", json={"depot_id": "futian", "shift_id": "early"})
    assert response.status_code == 201 and response.json()["plan_id"] == "2026-12-07.futian.early"


def test_a_bin_crossing_a_threshold_mid_shift_replans_the_running_plan(store, clock) -> None:
    feed = ViolationFeed(100)
    board = PlanBoard(dispatch_settings(trucks=2, capacity_bins=4), clock=clock)
    services = ApiServices(store=store, metrics=Metrics(), dispatch=board, feed=feed)
    with TestClient(create_app(services)) as client:
        plan_id = make(client)["plan_id"]
        clock.now_ms = EARLY_START_MS + HOUR_MS  # the shift is under way
        store.write_predictions([forecast("bin-new", full_in_h=4, lat_offset=0.002, lon_offset=0.002,
                                          at_ms=clock.now_ms)])
        store.flush()
        # Neither a bin already in the plan nor a fire re-plans (revision 2 below is the only re-plan).
        feed.publish([open_violation("bin-000", "bin_near_full"), open_violation("bin-other", "bin_fire")])
        feed.publish([open_violation("bin-new", "bin_near_full")])

        def planned_now() -> set[str]:
            plan = board.get(plan_id)
            assert plan is not None
            return {stop.device_id for route in plan.routes for stop in route.stops}

        wait_for(lambda: "bin-new" in planned_now(), message="the re-plan with bin-new")
        after = client.get(EARLY_PLAN).json()
    assert after["revision"] == 2 and after["figures"]["mandatory_missed"] == 0
