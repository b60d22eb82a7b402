"""Dispatch plans working on cases, through the API over real SQLite and PostgreSQL: a bin overflows, its
case is registered, a plan's stop carries the case and dispatches it to the truck, the stop reported done
moves the case to reported_done, and the bin's overflow clearing has the sensor verify and close it
(docs/dispatch.md, "Cases"; docs/cases.md, "Dispatch plans")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient

from api.access.keys import Scope
from core.case_settings import CaseSettings
from core.models import Violation, ViolationStatus
from core.settings import RelationalSettings
from processors.dispatch.board import PlanBoard
from store.dispatch import PlanStore
from tests.support.alerts import AlertApi, alert_api, bearer
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

ROUTES = CaseSettings.model_validate({"routes": [
    {"match": {"types": ["bin_overflow"]}, "department": "sanitation", "category": "0101",
     "priority": "high"},
    {"match": {"types": ["bin_near_full"]}, "department": "sanitation", "category": "0102"},
]})
PHOTO = "https://photos.example/bin-002-emptied.jpg"


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> float:
        return self.now_ms / 1000


class Dispatch:
    """The API with cases routed and plans in the relational database; a dispatcher's and a case
    reader's keys."""

    def __init__(self, tmp_path: Path, relational: RelationalSettings) -> None:
        self.api: AlertApi = alert_api(tmp_path, cases=ROUTES, relational=relational)
        self.clock = Clock(EARLY_START_MS - HOUR_MS)
        self.board = PlanBoard(dispatch_settings(trucks=2, capacity_bins=4),
                               store=PlanStore.open(relational, tmp_path), clock=self.clock)
        self.api.services.dispatch = self.board
        self.api.store.write_predictions(grid_of_bins(6, full_in_h=3))
        self.api.store.flush()
        self.client: TestClient = self.api.client()
        self.dispatcher = bearer(self.api.key(Scope.DISPATCH_WRITE, Scope.READINGS_READ, name="depot"))
        self.reader = bearer(self.api.key(Scope.CASES_READ, Scope.PLATES, name="hotline"))

    def opens(self, device_id: str, type: str = "bin_overflow") -> Violation:
        """The rule opens a violation: stored, and applied to the cases as the intake does."""
        violation = open_violation(device_id, type)
        self.api.store.write_violations([violation])
        self.api.store.flush()
        self.api.cases.violation_changes([violation])
        return violation

    def clears(self, violation: Violation) -> None:
        cleared = msgspec.structs.replace(violation, status=ViolationStatus.CLEARED,
                                          end_time_ms=self.clock.now_ms, updated_time_ms=self.clock.now_ms)
        self.api.store.write_violations([cleared])
        self.api.store.flush()
        self.api.cases.violation_changes([cleared])

    def case_at(self, device_id: str) -> dict[str, Any]:
        items = [case for case in self.client.get("/v1/cases", headers=self.reader).json()["items"]
                 if case["place"] == device_id]
        assert len(items) == 1, items
        case: dict[str, Any] = self.client.get(f"/v1/cases/{items[0]['case_id']}", headers=self.reader).json()
        return case

    def plan(self) -> dict[str, Any]:
        response = self.client.post("/v1/dispatch/plans", headers=self.dispatcher,
                                    json={"depot_id": "futian", "shift_id": "early", "date": DAY.isoformat()})
        assert response.status_code == 201, response.text
        plan: dict[str, Any] = response.json()
        return plan

    def report(self, device_id: str, **body: str) -> dict[str, Any]:
        response = self.client.post(f"{EARLY_PLAN}/stops/{device_id}/done", headers=self.dispatcher,
                                    json=body or None)
        assert response.status_code == 200, response.text
        plan: dict[str, Any] = response.json()
        return plan


@pytest.fixture
def dispatch(tmp_path: Path, relational: RelationalSettings) -> Iterator[Dispatch]:
    dispatch = Dispatch(tmp_path, relational)
    yield dispatch
    dispatch.api.close()
    dispatch.board.close()


def stop_at(plan: dict[str, Any], device_id: str) -> tuple[str, dict[str, Any]]:
    """The truck and the stop at `device_id`."""
    [found] = [(route["truck_id"], stop) for route in plan["routes"] for stop in route["stops"]
               if stop["device_id"] == device_id]
    return found


def steps(case: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [(entry["actor"], entry["from_state"], entry["to_state"]) for entry in case["history"]]


def test_an_overflow_case_is_planned_emptied_and_closed_by_the_sensor(dispatch: Dispatch) -> None:
    overflow = dispatch.opens("bin-002")
    registered = dispatch.case_at("bin-002")
    assert (registered["state"], registered["department"]) == ("registered", "sanitation")

    plan = dispatch.plan()
    truck, stop = stop_at(plan, "bin-002")
    assert stop["case_id"] == registered["case_id"] and stop["mandatory"]
    assert {s["case_id"] for r in plan["routes"] for s in r["stops"] if s["device_id"] != "bin-002"} == {None}
    dispatched = dispatch.case_at("bin-002")
    assert (dispatched["state"], dispatched["assignee"], dispatched["department"]) == (
        "dispatched", truck, "sanitation")
    assert dispatched["history"][-1]["note"] == f"planned on {plan['plan_id']} for truck {truck}"

    dispatch.clock.now_ms = stop["eta_ms"]
    after = dispatch.report("bin-002", photo_url=PHOTO, note="lid cracked")
    assert stop_at(after, "bin-002")[1]["status"] == "done"
    reported = dispatch.case_at("bin-002")
    assert (reported["state"], reported["photo_url"], reported["assignee"]) == ("reported_done", PHOTO, truck)
    last = reported["history"][-1]
    assert last["note"].startswith(f"emptied by truck {truck} on plan {plan['plan_id']} (reported by ")
    assert last["note"].endswith(": lid cracked") and last["photo_url"] == PHOTO

    dispatch.clock.now_ms += 600_000
    dispatch.clears(overflow)  # the bin's fill fell below clear_pct: it was emptied
    closed = dispatch.case_at("bin-002")
    assert (closed["state"], closed["resolution"], closed["open_violations"]) == (
        "closed", "verified_by_sensor", 0)
    by_truck = f"dispatch:{truck}"
    assert steps(closed) == [
        ("routing", None, "registered"), (by_truck, "registered", "dispatched"),
        (by_truck, "dispatched", "accepted"), (by_truck, "accepted", "in_progress"),
        (by_truck, "in_progress", "reported_done"), ("sensor", "reported_done", "verified"),
        ("sensor", "verified", "closed")]


def test_a_stop_reported_without_a_photo_leaves_its_case_in_progress_for_the_sensor(
        dispatch: Dispatch) -> None:
    overflow = dispatch.opens("bin-003")
    truck, stop = stop_at(dispatch.plan(), "bin-003")
    dispatch.clock.now_ms = stop["eta_ms"]
    refused = dispatch.client.post(f"{EARLY_PLAN}/stops/bin-003/done", headers=dispatch.dispatcher,
                                   json={"photo_url": "file:///sdcard/bin.jpg"})
    assert refused.status_code == 422 and refused.json()["type"] == "urn:citywatch:problem:invalid-input"
    assert "photo_url" in refused.text and dispatch.case_at("bin-003")["state"] == "dispatched"
    dispatch.report("bin-003")
    case = dispatch.case_at("bin-003")
    assert case["state"] == "in_progress" and case["photo_url"] is None
    assert "reported without a photo" in case["history"][-1]["note"]
    dispatch.clears(overflow)
    closed = dispatch.case_at("bin-003")
    assert (closed["state"], closed["resolution"]) == ("closed", "verified_by_sensor")
    assert steps(closed)[-3:] == [(f"dispatch:{truck}", "accepted", "in_progress"),
                                  ("sensor", "in_progress", "verified"), ("sensor", "verified", "closed")]


def test_a_bin_with_a_near_full_and_an_overflow_case_links_the_overflow_case(dispatch: Dispatch) -> None:
    dispatch.opens("bin-001", "bin_near_full")
    dispatch.opens("bin-001", "bin_overflow")
    dispatch.opens("bin-004", "bin_near_full")
    cases = {(case["place"], case["type"]): case["case_id"] for case in dispatch.client.get(
        "/v1/cases", headers=dispatch.reader).json()["items"]}
    plan = dispatch.plan()
    assert stop_at(plan, "bin-001")[1]["case_id"] == cases["bin-001", "bin_overflow"]
    assert stop_at(plan, "bin-004")[1]["case_id"] == cases["bin-004", "bin_near_full"]


def test_a_case_closed_before_the_truck_reports_stays_closed(dispatch: Dispatch) -> None:
    overflow = dispatch.opens("bin-002")
    _, stop = stop_at(dispatch.plan(), "bin-002")
    dispatch.clock.now_ms = stop["eta_ms"]
    dispatch.clears(overflow)  # the sensor saw the bin emptied before the driver reported it
    dispatch.report("bin-002", photo_url=PHOTO)
    case = dispatch.case_at("bin-002")
    assert (case["state"], case["resolution"]) == ("closed", "verified_by_sensor")
    assert steps(case)[-1] == ("sensor", "verified", "closed")


def test_a_case_opened_mid_shift_is_linked_and_dispatched_by_the_next_replan(dispatch: Dispatch) -> None:
    assert stop_at(dispatch.plan(), "bin-005")[1]["case_id"] is None
    dispatch.clock.now_ms = EARLY_START_MS + 10 * 60_000
    dispatch.opens("bin-005")
    replanned = dispatch.client.post(f"{EARLY_PLAN}/replan", headers=dispatch.dispatcher).json()
    case = dispatch.case_at("bin-005")
    truck, stop = stop_at(replanned, "bin-005")
    assert stop["case_id"] == case["case_id"]
    assert (case["state"], case["assignee"]) == ("dispatched", truck)
