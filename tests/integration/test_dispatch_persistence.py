"""Dispatch plans in the relational database, on SQLite and on PostgreSQL: a plan made through one api
replica is read, reported on and re-planned through another, survives a restart, and stop reports made
at the same time through two replicas are all kept (docs/dispatch.md, "Where plans are kept")."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.routes.dispatch import depot_candidates
from api.services import ApiServices
from core.metrics import Metrics
from core.settings import RelationalKind, RelationalSettings
from processors.dispatch.board import PlanBoard
from processors.dispatch.candidates import candidates_from
from processors.dispatch.model import StopStatus
from processors.dispatch.planner import plan_shift, shift_window
from processors.dispatch.travel import GreatCircleTravel
from store.dispatch import (
    FILE_NAME,
    SCHEMA,
    SCHEMA_VERSION,
    PlanStore,
    StopAlreadyDone,
    plan_from_json,
    plan_to_json,
)
from store.relational import RelationalError, open_database
from store.sqlite_store import SqliteStore
from tests.support.dispatch import (
    DAY,
    EARLY_PLAN,
    EARLY_START_MS,
    HOUR_MS,
    dispatch_settings,
    grid_of_bins,
    open_violation,
)

pytestmark = pytest.mark.integration

SETTINGS = dispatch_settings(trucks=2, capacity_bins=4)


class Clock:
    """The time the replicas share."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> float:
        return self.now_ms / 1000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore.in_directory(tmp_path / "readings")
    store.write_predictions(grid_of_bins(6, full_in_h=3))
    store.write_violations([open_violation("bin-005", "bin_tilt")])
    store.flush()
    yield store
    store.close()


@pytest.fixture
def replica(tmp_path: Path, relational: RelationalSettings, store: SqliteStore
            ) -> Iterator[Callable[..., TestClient]]:
    """`replica(clock)`: an API instance with a plan board of its own over the one shared database (the
    SQLite file in one data directory, or the PostgreSQL database); closed at the end."""
    opened: list[Any] = []

    def start(clock: Callable[[], float]) -> TestClient:
        board = PlanBoard(SETTINGS, store=PlanStore.open(relational, tmp_path / "data"), clock=clock)
        client = TestClient(create_app(ApiServices(store=store, metrics=Metrics(), dispatch=board)))
        client.__enter__()
        opened.append(client)
        return client

    yield start
    for client in opened:
        client.__exit__(None, None, None)


def make(client: TestClient) -> dict[str, Any]:
    response = client.post("/v1/dispatch/plans", json={"depot_id": "futian", "shift_id": "early",
                                                       "date": DAY.isoformat()})
    assert response.status_code == 201, response.text
    plan: dict[str, Any] = response.json()
    return plan


def done(plan: dict[str, Any]) -> set[str]:
    return {stop["device_id"] for route in plan["routes"] for stop in route["stops"]
            if stop["status"] == "done"}


def first_stops(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The first stop of each truck that has one."""
    return [route["stops"][0] for route in plan["routes"] if route["stops"]]


def test_a_plan_made_through_one_replica_is_reported_on_and_replanned_through_another(replica) -> None:
    clock = Clock(EARLY_START_MS - HOUR_MS)
    one, two = replica(clock), replica(clock)
    plan = make(one)
    assert two.get(EARLY_PLAN).json() == plan
    assert [item["plan_id"] for item in two.get("/v1/dispatch/plans").json()["items"]] == [plan["plan_id"]]
    stop = first_stops(plan)[0]
    clock.now_ms = stop["eta_ms"]
    reported = two.post(f"{EARLY_PLAN}/stops/{stop['device_id']}/done")
    assert reported.status_code == 200, reported.text
    assert reported.json()["revision"] == 2 and done(reported.json()) == {stop["device_id"]}
    assert one.get(EARLY_PLAN).json() == reported.json()
    again = one.post(f"{EARLY_PLAN}/stops/{stop['device_id']}/done")
    assert again.status_code == 409 and "already reported done" in again.json()["detail"]
    replanned = one.post(f"{EARLY_PLAN}/replan").json()
    assert replanned["revision"] == 3 and done(replanned) == {stop["device_id"]}
    assert two.get(f"{EARLY_PLAN}/stops.csv").text == one.get(f"{EARLY_PLAN}/stops.csv").text


def test_plans_and_their_reports_survive_a_restart(replica, tmp_path: Path, relational) -> None:
    clock = Clock(EARLY_START_MS - HOUR_MS)
    before = replica(clock)
    plan = make(before)
    stop = first_stops(plan)[0]
    clock.now_ms = stop["eta_ms"]
    reported = before.post(f"{EARLY_PLAN}/stops/{stop['device_id']}/done").json()
    before.__exit__(None, None, None)  # the API process stops: its board and database connection close

    after = replica(clock)
    assert after.get(EARLY_PLAN).json() == reported
    assert after.post(f"{EARLY_PLAN}/stops/{stop['device_id']}/done").status_code == 409
    other = next(s for s in first_stops(reported) if s["device_id"] != stop["device_id"])
    clock.now_ms = max(clock.now_ms, other["eta_ms"])
    assert done(after.post(f"{EARLY_PLAN}/stops/{other['device_id']}/done").json()) == {
        stop["device_id"], other["device_id"]}


class ReportsMeanwhile:
    """A replica's clock that, once armed, lets another replica report a stop at its second reading: inside
    the re-plan that follows this replica's own report (the report is timed first, then the re-plan),
    after it read the plan and before it stores its re-plan."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.readings = 0
        self.report: Callable[[], Any] | None = None
        self.answer: Any = None

    def __call__(self) -> float:
        if self.report is not None:
            self.readings += 1
            if self.readings == 2:
                self.answer = self.report()
        return self.clock()


def test_a_report_through_another_replica_while_one_replans_is_not_lost(replica) -> None:
    clock = Clock(EARLY_START_MS - HOUR_MS)
    meanwhile = ReportsMeanwhile(clock)
    one, two = replica(meanwhile), replica(clock)
    plan = make(one)
    first, second = first_stops(plan)[:2]
    clock.now_ms = max(first["eta_ms"], second["eta_ms"])
    meanwhile.report = lambda: two.post(f"{EARLY_PLAN}/stops/{second['device_id']}/done")
    answer = one.post(f"{EARLY_PLAN}/stops/{first['device_id']}/done")
    assert meanwhile.answer is not None and meanwhile.answer.status_code == 200, meanwhile.answer
    assert answer.status_code == 200, answer.text
    assert done(meanwhile.answer.json()) == {first["device_id"], second["device_id"]}
    # Replica two's re-plan came first and holds both reports: replica one answers that one.
    assert answer.json() == meanwhile.answer.json() == two.get(EARLY_PLAN).json()


def test_reports_made_at_the_same_time_through_two_replicas_are_all_kept(replica) -> None:
    clock = Clock(EARLY_START_MS - HOUR_MS)
    one, two = replica(clock), replica(clock)
    stops = first_stops(make(one))
    clock.now_ms = max(stop["eta_ms"] for stop in stops)
    start = threading.Barrier(2)
    answers: dict[str, int] = {}

    def report(client: TestClient, device_id: str) -> None:
        start.wait()
        answers[device_id] = client.post(f"{EARLY_PLAN}/stops/{device_id}/done").status_code

    threads = [threading.Thread(target=report, args=(client, stop["device_id"]))
               for client, stop in zip((one, two), stops, strict=False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reported = {stop["device_id"] for stop in stops[:2]}
    assert answers == dict.fromkeys(reported, 200)
    assert done(one.get(EARLY_PLAN).json()) == done(two.get(EARLY_PLAN).json()) == reported


def _plan(now_ms: int = EARLY_START_MS - HOUR_MS):
    depot = SETTINGS.depots[0]
    return plan_shift(plan_id="2026-12-07.futian.early", depot=depot,
                      shift=shift_window(depot, "early", DAY, SETTINGS.time_zone),
                      candidates=[], settings=SETTINGS, travel=GreatCircleTravel(25, 1.3), now_ms=now_ms)


def test_a_plan_is_stored_whole(store: SqliteStore) -> None:
    board = PlanBoard(SETTINGS)
    depot = SETTINGS.depots[0]
    plan = plan_shift(plan_id="p", depot=depot, shift=shift_window(depot, "early", DAY, SETTINGS.time_zone),
                      candidates=depot_candidates(store, board, depot, {}), settings=SETTINGS,
                      travel=board.travel(), now_ms=EARLY_START_MS)
    assert plan.flagged and plan.mandatory and any(route.stops for route in plan.routes)
    assert plan_from_json(plan_to_json(plan)) == plan


def test_a_replan_stores_only_over_the_version_it_started_from(tmp_path: Path, relational) -> None:
    one, two = PlanStore.open(relational, tmp_path), PlanStore.open(relational, tmp_path)
    try:
        plan = _plan()
        one.create(plan, keep=10)
        read_by_one, read_by_two = one.get(plan.plan_id), two.get(plan.plan_id)
        assert read_by_one is not None and read_by_two is not None
        assert two.replace(plan, read_by_two)
        assert not one.replace(plan, read_by_one)  # replica two stored first: one must look again
        again = one.get(plan.plan_id)
        assert again is not None and again.version == read_by_one.version + 1
        one.create(plan, keep=10)  # made again for the shift: a re-plan of the old one is refused too
        assert not two.replace(plan, again)
    finally:
        one.close()
        two.close()


def test_a_plan_made_again_for_its_shift_forgets_its_reports_and_only_the_newest_plans_stay(
        store: SqliteStore, tmp_path: Path, relational) -> None:
    clock = Clock(EARLY_START_MS - HOUR_MS)
    board = PlanBoard(dispatch_settings(trucks=2, capacity_bins=4, plans_kept=2),
                      store=PlanStore.open(relational, tmp_path), clock=clock)
    with TestClient(create_app(ApiServices(store=store, metrics=Metrics(), dispatch=board))) as client:
        stop = first_stops(make(client))[0]
        assert client.post(f"{EARLY_PLAN}/stops/{stop['device_id']}/done").status_code == 200
        assert done(make(client)) == set()
        assert client.post(f"{EARLY_PLAN}/stops/{stop['device_id']}/done").status_code == 200
        for shift_id, date in (("late", "2026-12-07"), ("early", "2026-12-08")):
            assert client.post("/v1/dispatch/plans", json={"depot_id": "futian", "shift_id": shift_id,
                                                           "date": date}).status_code == 201
        assert [item["plan_id"] for item in client.get("/v1/dispatch/plans").json()["items"]] == [
            "2026-12-08.futian.early", "2026-12-07.futian.late"]
        assert client.get(EARLY_PLAN).status_code == 404


def test_a_report_a_replan_did_not_see_is_shown_done_on_its_truck(tmp_path: Path, relational) -> None:
    board = PlanBoard(SETTINGS, store=PlanStore.open(relational, tmp_path))
    try:
        depot = SETTINGS.depots[0]
        candidates = candidates_from(grid_of_bins(4, full_in_h=3), [], SETTINGS)
        plan = plan_shift(plan_id="p", depot=depot,
                          shift=shift_window(depot, "early", DAY, SETTINGS.time_zone), candidates=candidates,
                          settings=SETTINGS, travel=board.travel(), now_ms=EARLY_START_MS)
        board.put(plan)
        route = next(route for route in plan.routes if route.stops)
        stop = route.stops[0]
        stored = board.stored("p")
        assert stored is not None
        board.store.record_done("p", stop.device_id, done_time_ms=EARLY_START_MS + HOUR_MS, actor="k1")
        # A re-plan that read the plan before the report, and moved the stop to another truck.
        other = next(r for r in plan.routes if r.truck_id != route.truck_id)
        moved = dataclasses.replace(plan, revision=2, routes=(
            dataclasses.replace(route, stops=route.stops[1:]),
            dataclasses.replace(other, stops=(stop, *other.stops))))
        assert board.store.replace(moved, stored)
        after = board.stored("p")
        assert after is not None and not after.holds_reports
        by_truck = {r.truck_id: r.stops for r in after.plan.routes}
        assert (by_truck[route.truck_id][0].device_id, by_truck[route.truck_id][0].status) == (
            stop.device_id, StopStatus.DONE)
        assert stop.device_id not in {s.device_id for s in by_truck[other.truck_id]}
        with pytest.raises(StopAlreadyDone):
            board.store.record_done("p", stop.device_id, done_time_ms=EARLY_START_MS + HOUR_MS, actor="k2")
    finally:
        board.close()


def test_a_database_written_by_a_newer_citywatch_is_refused(tmp_path: Path, relational) -> None:
    PlanStore.open(relational, tmp_path).close()
    database = open_database(relational, tmp_path, FILE_NAME, SCHEMA)
    database.execute("UPDATE dispatch_schema SET version = ?", (SCHEMA_VERSION + 1,))
    database.close()
    with pytest.raises(RelationalError, match=f"schema version {SCHEMA_VERSION + 1}, written by a newer"):
        PlanStore.open(relational, tmp_path)


def test_the_plans_are_in_the_relational_database_the_settings_name(tmp_path: Path, relational) -> None:
    board = PlanBoard.open(SETTINGS, relational, tmp_path)
    try:
        board.put(_plan())
    finally:
        board.close()
    assert (tmp_path / "dispatch.sqlite3").exists() == (relational.kind is RelationalKind.SQLITE)


def test_one_stop_reported_through_two_replicas_at_once_is_accepted_once(replica) -> None:
    clock = Clock(EARLY_START_MS - HOUR_MS)
    one, two = replica(clock), replica(clock)
    stop = first_stops(make(one))[0]
    clock.now_ms = stop["eta_ms"]
    start = threading.Barrier(2)
    answers: list[int] = []

    def report(client: TestClient) -> None:
        start.wait()
        answers.append(client.post(f"{EARLY_PLAN}/stops/{stop['device_id']}/done").status_code)

    threads = [threading.Thread(target=report, args=(client,)) for client in (one, two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200, 409]
    assert done(one.get(EARLY_PLAN).json()) == {stop["device_id"]}
