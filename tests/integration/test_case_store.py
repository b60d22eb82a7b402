"""Cases kept in the relational database, on SQLite and on PostgreSQL: violation changes open, join and
close cases exactly once, however often they arrive and through however many api replicas."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.case_settings import CaseSettings
from core.models import Violation, ViolationStatus
from core.settings import RelationalKind, RelationalSettings
from processors.cases.model import SENSOR_ACTOR, CaseOrigin, CaseState, Resolution
from processors.cases.routing import CaseRouter
from processors.cases.service import ROUTING_ACTOR, CaseService, NewCase
from processors.cases.states import TransitionRequest
from store.cases import CaseQuery, CaseStore, InvalidCaseCursor
from tests.support.alerts import violation

S = CaseState
SETTINGS = CaseSettings.model_validate({"routes": [
    {"match": {"types": ["bin_overflow", "bin_fire"]}, "department": "sanitation", "category": "0101",
     "priority": "high"},
]})


class Clock:
    def __init__(self) -> None:
        self.now = 1_764_000_000_000

    def __call__(self) -> int:
        self.now += 1000
        return self.now


@pytest.fixture
def open_service(tmp_path: Path, relational: RelationalSettings) -> Iterator[Callable[[], CaseService]]:
    """Services over one database (a PostgreSQL database, or one SQLite file): api replicas."""
    stores: list[CaseStore] = []

    def open_one() -> CaseService:
        store = CaseStore.open(relational, tmp_path)
        stores.append(store)
        return CaseService(store, CaseRouter(SETTINGS, "Asia/Shanghai"), now_ms=Clock())

    yield open_one
    for store in stores:
        store.close()


def overflow(n: int, *, device: str = "bin-1", status: ViolationStatus = ViolationStatus.OPEN) -> Violation:
    return violation(n, type="bin_overflow", device=device, status=status, grid="FT-11", plate=None)


def test_a_second_overflow_of_the_same_bin_joins_its_open_case(
        open_service: Callable[[], CaseService]) -> None:
    service = open_service()
    service.violation_changes([overflow(1), overflow(2), overflow(3, device="bin-2")])
    cases = service.store.query(CaseQuery()).items
    assert sorted((c.place, c.open_violations) for c in cases) == [("bin-1", 2), ("bin-2", 1)]
    bin_1 = next(c for c in cases if c.place == "bin-1")
    assert (bin_1.state, bin_1.department, bin_1.category, bin_1.grid, bin_1.origin) == (
        S.REGISTERED, "sanitation", "0101", "FT-11", CaseOrigin.VIOLATION)
    assert [m.violation_id for m in service.store.violations(bin_1.case_id)] == ["v0001", "v0002"]
    history = service.store.history(bin_1.case_id)
    assert [(e.seq, e.actor, e.from_state, e.to_state, e.note) for e in history] == [
        (1, ROUTING_ACTOR, None, S.REGISTERED, "opened by violation v0001")]


def test_another_type_at_the_same_bin_is_another_case(open_service: Callable[[], CaseService]) -> None:
    service = open_service()
    fire = violation(2, type="bin_fire", device="bin-1", plate=None)
    service.violation_changes([overflow(1), fire])
    assert sorted(c.type for c in service.store.query(CaseQuery()).items) == ["bin_fire", "bin_overflow"]


def test_a_violation_no_route_takes_opens_no_case(open_service: Callable[[], CaseService]) -> None:
    service = open_service()
    service.violation_changes([violation(1, type="illegal_parking")])
    assert service.store.query(CaseQuery()).items == []


def test_replayed_changes_and_a_second_replica_change_nothing(
        open_service: Callable[[], CaseService]) -> None:
    a, b = open_service(), open_service()
    changes = [overflow(1), overflow(2, device="bin-2"), overflow(1, status=ViolationStatus.CLEARED)]
    # Both replicas at once, each twice: one case per bin, one clearing, one closure.
    threads = [threading.Thread(target=service.violation_changes, args=(changes,))
               for service in (a, b, a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cases = {c.place: c for c in a.store.query(CaseQuery()).items}
    assert sorted(cases) == ["bin-1", "bin-2"]
    assert (cases["bin-1"].state, cases["bin-1"].open_violations) == (S.CLOSED, 0)
    assert [e.to_state for e in a.store.history(cases["bin-1"].case_id)] == [S.REGISTERED, S.CLOSED]


def test_the_bin_emptied_after_dispatch_verifies_and_closes_the_case_by_sensor(
        open_service: Callable[[], CaseService]) -> None:
    service = open_service()
    service.violation_changes([overflow(1)])
    [case] = service.store.query(CaseQuery()).items
    service.transition(case.case_id, TransitionRequest(to=S.DISPATCHED, assignee="wang"), "k1")
    service.violation_changes([overflow(1, status=ViolationStatus.CLEARED)])
    closed = service.store.get(case.case_id)
    assert closed is not None
    assert (closed.state, closed.resolution, closed.open_violations) == (
        S.CLOSED, Resolution.VERIFIED_BY_SENSOR, 0)
    assert [(e.actor, e.to_state) for e in service.store.history(case.case_id)] == [
        (ROUTING_ACTOR, S.REGISTERED), ("k1", S.DISPATCHED), (SENSOR_ACTOR, S.VERIFIED),
        (SENSOR_ACTOR, S.CLOSED)]
    [member] = service.store.violations(case.case_id)
    assert member.cleared_time_ms is not None


def test_the_case_waits_for_every_joined_violation_to_clear(open_service: Callable[[], CaseService]) -> None:
    service = open_service()
    service.violation_changes([overflow(1), overflow(2), overflow(1, status=ViolationStatus.CLEARED)])
    [case] = service.store.query(CaseQuery()).items
    assert (case.state, case.open_violations) == (S.REGISTERED, 1)
    service.violation_changes([overflow(2, status=ViolationStatus.CLEARED)])
    closed = service.store.get(case.case_id)
    assert closed is not None
    assert (closed.state, closed.resolution) == (S.CLOSED, Resolution.RESOLVED_BY_ITSELF)


def test_once_closed_the_next_overflow_opens_a_new_case(open_service: Callable[[], CaseService]) -> None:
    service = open_service()
    service.violation_changes([overflow(1), overflow(1, status=ViolationStatus.CLEARED), overflow(2)])
    states = sorted(c.state for c in service.store.query(CaseQuery()).items)
    assert states == [S.CLOSED, S.REGISTERED]


def test_a_person_verified_type_only_records_the_clearing(tmp_path: Path,
                                                          relational: RelationalSettings) -> None:
    settings = CaseSettings.model_validate({**SETTINGS.model_dump(),
                                            "types": {"bin_overflow": {"verify": "person"}}})
    store = CaseStore.open(relational, tmp_path)
    try:
        service = CaseService(store, CaseRouter(settings, "Asia/Shanghai"), now_ms=Clock())
        service.violation_changes([overflow(1), overflow(1, status=ViolationStatus.CLEARED)])
        [case] = store.query(CaseQuery()).items
        assert (case.state, case.open_violations) == (S.REGISTERED, 0)
        assert [m.cleared_time_ms is not None for m in store.violations(case.case_id)] == [True]
    finally:
        store.close()


def test_a_case_made_by_hand_is_person_verified_and_filtered_like_the_others(
        open_service: Callable[[], CaseService]) -> None:
    service = open_service()
    service.violation_changes([overflow(1)])
    made = service.create(NewCase(type="pothole", description="a hole on Shennan Rd", department="roads",
                                  district="futian"), "k9")
    assert (made.state, made.verify.value, made.created_by, made.place) == (
        S.REGISTERED, "person", "k9", None)
    assert service.store.get(made.case_id) == made
    assert [c.case_id for c in service.store.query(CaseQuery(departments=["roads"])).items] == [made.case_id]
    assert [c.type for c in service.store.query(CaseQuery(states=[S.REGISTERED], grids=["FT-11"])).items] == [
        "bin_overflow"]
    assert service.store.query(CaseQuery(from_ms=made.created_time_ms + 1)).items == []


def test_pages_go_back_in_time_without_gaps(open_service: Callable[[], CaseService]) -> None:
    service = open_service()
    service.violation_changes([overflow(n, device=f"bin-{n}") for n in range(5)])
    first = service.store.query(CaseQuery(limit=2))
    second = service.store.query(CaseQuery(limit=2, cursor=first.next_cursor))
    third = service.store.query(CaseQuery(limit=2, cursor=second.next_cursor))
    places = [c.place for page in (first, second, third) for c in page.items]
    assert places == [f"bin-{n}" for n in range(4, -1, -1)] and third.next_cursor is None
    with pytest.raises(InvalidCaseCursor):
        service.store.query(CaseQuery(cursor="yesterday"))


def test_the_store_lives_where_the_relational_settings_say(tmp_path: Path,
                                                           relational: RelationalSettings) -> None:
    store = CaseStore.open(relational, tmp_path)
    store.close()
    assert (tmp_path / "cases.sqlite3").exists() is (relational.kind is RelationalKind.SQLITE)
