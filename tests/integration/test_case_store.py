"""Cases kept in the relational database, on SQLite and on PostgreSQL: violation changes open, join and
close cases exactly once, however often they arrive and through however many api replicas."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.case_settings import CasePriority, CaseSettings, Verification
from core.models import Violation, ViolationStatus
from core.settings import RelationalKind, RelationalSettings
from processors.cases.model import SENSOR_ACTOR, Case, CaseOrigin, CaseState, Resolution
from processors.cases.routing import CaseRouter
from processors.cases.service import ROUTING_ACTOR, CaseService, NewCase
from processors.cases.states import TransitionRequest
from store.cases import CaseQuery, CaseStore, CaseTransaction, InvalidCaseCursor
from store.open311 import FiledRequest, Open311Store, Reporter, RequestQuery
from tests.support.alerts import violation
from tests.support.events import T0_MS

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


def test_a_case_carries_the_times_its_violations_happened_at_however_late_they_are_applied(
        tmp_path: Path, relational: RelationalSettings) -> None:
    # The cases take the changes an hour after they happened (a restart's reconciliation, a reader that
    # fell behind): the case is registered when its violation was detected, and verified when the bin
    # reported emptied, as it would have been at once.
    store = CaseStore.open(relational, tmp_path)
    try:
        late = CaseService(store, CaseRouter(SETTINGS, "Asia/Shanghai"), now_ms=lambda: T0_MS + 3_600_000)
        opened = overflow(1)
        detected_ms = opened.updated_time_ms
        joined = overflow(2, device="bin-1")
        late.violation_changes([opened, joined])
        [case] = late.store.query(CaseQuery()).items
        assert case.created_time_ms == detected_ms
        late.transition(case.case_id, TransitionRequest(to=S.DISPATCHED, assignee="wang"), "k1")
        dispatched_ms = T0_MS + 3_600_000
        emptied_1 = overflow(1, status=ViolationStatus.CLEARED)  # before the dispatch: the crew was quick
        emptied_2 = violation(2, type="bin_overflow", device="bin-1", status=ViolationStatus.CLEARED,
                              grid="FT-11", plate=None, updated_offset_ms=5_000)
        late.violation_changes([emptied_1, emptied_2])
        closed = late.store.get(case.case_id)
        assert closed is not None and closed.state is S.CLOSED
        # The clearings happened before the dispatch: the sensors verify at the dispatch's time, never
        # before the case's last transition; each membership keeps its clearing's own time.
        assert [(e.actor, e.to_state, e.time_ms) for e in late.store.history(case.case_id)] == [
            (ROUTING_ACTOR, S.REGISTERED, detected_ms), ("k1", S.DISPATCHED, dispatched_ms),
            (SENSOR_ACTOR, S.VERIFIED, dispatched_ms), (SENSOR_ACTOR, S.CLOSED, dispatched_ms)]
        members = late.store.violations(case.case_id)
        assert [(m.violation_id, m.joined_time_ms, m.cleared_time_ms) for m in members] == [
            ("v0001", detected_ms, emptied_1.updated_time_ms),
            ("v0002", joined.updated_time_ms, emptied_2.updated_time_ms)]
        # The next overflow, an hour on, is applied at once: its case opens and closes at the event times.
        live = CaseService(store, CaseRouter(SETTINGS, "Asia/Shanghai"), now_ms=lambda: T0_MS + 10_000_000)
        again = violation(3, type="bin_overflow", device="bin-1", grid="FT-11", plate=None,
                          updated_offset_ms=3_700_000)
        cleared = violation(3, type="bin_overflow", device="bin-1", grid="FT-11", plate=None,
                            status=ViolationStatus.CLEARED, updated_offset_ms=3_900_000)
        live.violation_changes([again, cleared])
        newer = live.store.get(live.store.query(CaseQuery()).items[0].case_id)
        assert newer is not None and newer.case_id != case.case_id
        assert (newer.created_time_ms, newer.closed_time_ms, newer.resolution) == (
            again.updated_time_ms, cleared.updated_time_ms, Resolution.RESOLVED_BY_ITSELF)
    finally:
        store.close()


def test_a_violation_stamped_in_the_future_registers_its_case_now(tmp_path: Path,
                                                                  relational: RelationalSettings) -> None:
    store = CaseStore.open(relational, tmp_path)
    try:
        service = CaseService(store, CaseRouter(SETTINGS, "Asia/Shanghai"), now_ms=lambda: T0_MS - 60_000)
        service.violation_changes([overflow(1)])  # its device's clock runs a minute and more ahead
        [case] = service.store.query(CaseQuery()).items
        assert case.created_time_ms == T0_MS - 60_000
    finally:
        store.close()


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


def test_a_case_filed_through_open311_is_stored_with_its_request_or_not_at_all(
        open_service: Callable[[], CaseService]) -> None:
    service = open_service()
    open311 = Open311Store.beside(service.store)

    def filed(tx: CaseTransaction, case: Case) -> None:
        request = FiledRequest(case.case_id, "sanitation-bin-overflow", case.created_time_ms)
        Open311Store.add_in(tx.executor, request, Reporter(phone="13800138000"))

    made = service.create(NewCase(type="bin_overflow", description="full bin"), "k9", along=filed)
    request = open311.get(made.case_id)
    assert request is not None and request.request.service_code == "sanitation-bin-overflow"
    assert open311.reporter(made.case_id) == Reporter(phone="13800138000")

    def fails_after_the_request(tx: CaseTransaction, case: Case) -> None:
        filed(tx, case)
        raise RuntimeError("the server went away")

    with pytest.raises(RuntimeError):
        service.create(NewCase(type="bin_overflow", description="another"), "k9",
                       along=fails_after_the_request)
    # Neither the second case nor its request was stored.
    assert [case.case_id for case in service.store.query(CaseQuery()).items] == [made.case_id]
    assert [r.request.case_id for r in open311.query(RequestQuery())] == [made.case_id]


def test_reporters_contact_details_are_erased_once_their_case_has_been_closed_long_enough(
        open_service: Callable[[], CaseService]) -> None:
    service = open_service()
    day_ms = 86_400_000
    now_ms = 1_800_000_000_000
    closed_at = {"c_old": now_ms - 31 * day_ms, "c_recent": now_ms - 29 * day_ms, "c_open": None}
    kept = Open311Store.beside(service.store)  # no retention set: nothing is erased
    thirty_days = Open311Store.beside(service.store, reporter_retention_days=30)
    with service.store.transaction() as tx:
        for case_id, closed_ms in closed_at.items():
            tx.insert(Case(case_id=case_id, type="bin_overflow", priority=CasePriority.NORMAL,
                           state=S.REGISTERED if closed_ms is None else S.CLOSED,
                           verify=Verification.PERSON, origin=CaseOrigin.MANUAL, created_by="k9",
                           created_time_ms=now_ms - 40 * day_ms, updated_time_ms=closed_ms or now_ms,
                           closed_time_ms=closed_ms), [])
            Open311Store.add_in(tx.executor, FiledRequest(case_id, "sanitation-bin-overflow", now_ms),
                                Reporter(email=f"{case_id}@example.com"))
    assert kept.apply_retention(now_ms) == 0
    assert thirty_days.apply_retention(now_ms) == 1
    assert thirty_days.reporter("c_old") is None
    assert thirty_days.reporter("c_recent") == Reporter(email="c_recent@example.com")
    assert thirty_days.reporter("c_open") == Reporter(email="c_open@example.com")
    # The request itself stays, and reads as before: only the contact details went.
    assert sorted(r.request.case_id for r in thirty_days.query(RequestQuery())) == sorted(closed_at)
    assert thirty_days.apply_retention(now_ms) == 0


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
