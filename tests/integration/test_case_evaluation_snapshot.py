"""The evaluation's snapshot (store/case_columns.py), on SQLite and on PostgreSQL: a process that starts
from the stored snapshot and the cases written after its mark evaluates exactly what a process reading
every case evaluates; a replica never replaces a newer snapshot with an older one; a snapshot of another
format is ignored."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.case_settings import CasePriority, CaseSettings
from core.settings import RelationalSettings
from processors.cases.evaluation import evaluate
from processors.cases.model import CaseState
from processors.cases.routing import CaseRouter
from processors.cases.service import CaseService, NewCase
from processors.cases.states import TransitionRequest
from store.case_columns import SNAPSHOT_FORMAT
from store.cases import CaseQuery, CaseStore

DAY_MS = 86_400_000
T0_MS = 1_796_572_800_000  # Monday 2026-12-07 00:00 Asia/Shanghai


class Clock:
    def __init__(self) -> None:
        self.now_ms = T0_MS

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def stores(tmp_path: Path, relational: RelationalSettings) -> Iterator[list[CaseStore]]:
    """Case stores on one database, opened as processes (or replicas) would open them; closed at the end."""
    opened: list[CaseStore] = []
    yield opened
    for store in opened:
        store.close()


def opened(stores: list[CaseStore], relational: RelationalSettings, tmp_path: Path) -> CaseStore:
    store = CaseStore.open(relational, tmp_path)
    stores.append(store)
    return store


def work(service: CaseService, clock: Clock, count: int, offset: int) -> list[str]:
    """`count` cases in four districts and two departments, a day apart; every third closed, every
    fifth reworked on the way, every seventh suspended."""
    made = []
    for n in range(offset, offset + count):
        clock.now_ms = T0_MS + n * DAY_MS // 4
        case = service.create(NewCase(type="pothole", description=f"hole {n}", priority=CasePriority.HIGH,
                                      department=f"roads-{n % 2}", district=f"d{n % 4}", grid=f"g{n % 7}"),
                              "k1")
        made.append(case.case_id)
        steps = [TransitionRequest(to=CaseState.DISPATCHED)]
        if n % 3 == 0:
            steps += [TransitionRequest(to=CaseState.ACCEPTED), TransitionRequest(to=CaseState.IN_PROGRESS),
                      TransitionRequest(to=CaseState.REPORTED_DONE, note="filled", photo_url="https://p/1")]
            if n % 5 == 0:
                steps += [TransitionRequest(to=CaseState.REOPENED, note="sinks again"),
                          TransitionRequest(to=CaseState.IN_PROGRESS),
                          TransitionRequest(to=CaseState.REPORTED_DONE, note="again", photo_url="https://p/2")]
            steps += [TransitionRequest(to=CaseState.VERIFIED), TransitionRequest(to=CaseState.CLOSED)]
        elif n % 7 == 0:
            steps.append(TransitionRequest(to=CaseState.SUSPENDED, reason="crane"))
        for step in steps:
            clock.now_ms += 3_600_000
            service.transition(case.case_id, step, "k1")
    return made


def figures(store: CaseStore) -> dict[str, object]:
    end = T0_MS + 60 * DAY_MS
    return evaluate(store.evaluation_columns(T0_MS, end, end), T0_MS, end).as_json()


def test_a_process_starting_from_the_snapshot_evaluates_what_a_full_read_does(
        stores: list[CaseStore], relational: RelationalSettings, tmp_path: Path) -> None:
    clock = Clock()
    first = opened(stores, relational, tmp_path)
    service = CaseService(first, CaseRouter(CaseSettings(), "Asia/Shanghai"), now_ms=clock)
    work(service, clock, 40, 0)
    assert not first.checkpoint_evaluation(min_changes=10_000)  # not enough changed: nothing stored
    assert first.checkpoint_evaluation(min_changes=100)
    assert not first.checkpoint_evaluation(min_changes=1)  # nothing changed since
    # After the snapshot: new cases, and cases of the snapshot moved on (one closed, one resumed).
    later = work(service, clock, 20, 40)
    clock.now_ms += DAY_MS
    service.transition(later[0], TransitionRequest(to=CaseState.ACCEPTED), "k1")
    suspended = [c.case_id for c in first.query(CaseQuery(states=[CaseState.SUSPENDED], limit=100)).items]
    service.transition(suspended[0], TransitionRequest(to=CaseState.DISPATCHED), "k1")

    from_snapshot = opened(stores, relational, tmp_path)
    expected = figures(first)
    assert figures(from_snapshot) == expected
    city = expected["city"]
    assert isinstance(city, dict) and city["registered"] == 60 and city["reworked"] > 0
    assert city["backlog_suspended"] == len(suspended) - 1


def test_a_replica_never_replaces_a_newer_snapshot_with_an_older_one(
        stores: list[CaseStore], relational: RelationalSettings, tmp_path: Path) -> None:
    clock = Clock()
    behind = opened(stores, relational, tmp_path)
    service = CaseService(behind, CaseRouter(CaseSettings(), "Asia/Shanghai"), now_ms=clock)
    work(service, clock, 10, 0)
    behind.warm_evaluation()  # this replica has read up to the tenth case
    work(service, clock, 10, 10)
    ahead = opened(stores, relational, tmp_path)
    assert ahead.checkpoint_evaluation(min_changes=1)
    newest = behind._db.execute("SELECT seen_seq FROM case_column_snapshot").rows
    # The replica behind reads what changed before it stores; so it has nothing newer to store.
    assert not behind.checkpoint_evaluation(min_changes=1)
    assert behind._db.execute("SELECT seen_seq FROM case_column_snapshot").rows == newest
    assert figures(opened(stores, relational, tmp_path)) == figures(ahead)


def test_a_snapshot_of_another_format_or_unreadable_is_ignored(
        stores: list[CaseStore], relational: RelationalSettings, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    first = opened(stores, relational, tmp_path)
    service = CaseService(first, CaseRouter(CaseSettings(), "Asia/Shanghai"), now_ms=clock)
    work(service, clock, 12, 0)
    assert first.checkpoint_evaluation(min_changes=1)
    first._db.execute("UPDATE case_column_snapshot SET format = 99, columns = ?", (b"not columns",))
    assert figures(opened(stores, relational, tmp_path)) == figures(first)
    # Of this format but unreadable (cut short): ignored as well, with a warning.
    first._db.execute("UPDATE case_column_snapshot SET format = ?, columns = ?",
                      (SNAPSHOT_FORMAT, b"cut short"))
    with caplog.at_level(logging.WARNING, logger="store.case_columns"):
        assert figures(opened(stores, relational, tmp_path)) == figures(first)
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "cases: the evaluation snapshot could not be read"]
