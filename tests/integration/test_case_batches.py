"""A chunk of violation changes applied in one transaction (store.cases.CaseBatch: read up front, written
in bulk) leaves the cases exactly as applying the changes one at a time does, on SQLite and PostgreSQL:
the same cases, memberships, clearings, closures and history, whatever the chunks' sizes."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from core.case_settings import CaseSettings
from core.models import Violation, ViolationStatus
from core.settings import RelationalKind, RelationalSettings
from processors.cases.model import CaseState
from processors.cases.routing import CaseRouter
from processors.cases.service import CaseService
from processors.cases.states import TransitionRequest
from store.cases import CaseQuery, CaseStore
from tests.support.alerts import violation
from tests.support.postgres import PostgresServer

SETTINGS = CaseSettings.model_validate({"routes": [
    {"match": {"types": ["bin_overflow"]}, "department": "sanitation", "category": "0101"},
    {"match": {"types": ["toilet_odour"]}, "department": "sanitation", "category": "0102"}],
    "types": {"toilet_odour": {"verify": "person"}}})


def stream(seed: int = 3) -> list[list[Violation]]:
    """Four rounds of overflows of 12 places (some joined by a second overflow, some replayed), odours,
    unrouted changes and clearings, interleaved across places; three clearings of each round arrive only
    in the next round, after its overflows, which then join the cases still open."""
    rng = random.Random(seed)
    rounds: list[list[Violation]] = []
    late: list[Violation] = []
    n = 0
    for _ in range(4):
        opened, cleared = [], []
        for index in range(12):
            kind = "toilet_odour" if index % 4 == 3 else "bin_overflow"
            ids = [n := n + 1] + ([n := n + 1] if rng.random() < 0.3 else [])
            for number in ids:
                opened.append(violation(number, type=kind, device=f"dev-{index}", plate=None))
                cleared.append(violation(number, type=kind, device=f"dev-{index}", plate=None,
                                         status=ViolationStatus.CLEARED))
            if rng.random() < 0.2:
                opened.append(violation(n := n + 1, type="low_battery", device=f"dev-{index}", plate=None))
        rng.shuffle(opened)
        rng.shuffle(cleared)
        on_time = cleared[:-3]
        rounds.append(opened + rng.sample(opened, 4) + late + on_time + rng.sample(on_time, 3))
        late = cleared[-3:]
    rounds.append(late)
    return rounds


def apply(relational: RelationalSettings, data_dir: Path, chunk: int) -> list[tuple[Any, ...]]:
    """The stream in chunks of `chunk` changes; between rounds a dispatcher takes the overflow cases still
    open (the sensors verify those when their late clearings arrive)."""
    store = CaseStore.open(relational, data_dir)
    try:
        service = CaseService(store, CaseRouter(SETTINGS, "Asia/Shanghai"))
        for changes in stream():
            for start in range(0, len(changes), chunk):
                service.violation_changes(changes[start:start + chunk])
            for case in store.query(CaseQuery(limit=1000)).items:
                if case.state is CaseState.REGISTERED and case.type == "bin_overflow":
                    service.transition(case.case_id, TransitionRequest(to=CaseState.DISPATCHED), "dispatcher")
        # The evaluation reads the cases by their write numbers: it must see every case a chunk wrote,
        # as it sees every case written one at a time.
        columns = store.evaluation_columns(0, 2**62, 2**62 - 1)
        evaluated = (len(columns.registered_ms), int((columns.closed_ms < 2**62).sum()))
        return [*snapshot(store), ("evaluated", evaluated)]
    finally:
        store.close()


def snapshot(store: CaseStore) -> list[tuple[Any, ...]]:
    """Every case as something comparable across runs (ids and wall-clock times left out)."""
    cases = []
    for case in store.query(CaseQuery(limit=1000)).items:
        members = sorted((m.violation_id, m.cleared_time_ms is not None)
                         for m in store.violations(case.case_id))
        history = [(e.seq, e.actor, e.from_state, e.to_state) for e in store.history(case.case_id)]
        # The SLA clock runs on every case, whichever way it was written.
        cases.append((case.type, case.place, case.state, case.resolution, case.open_violations,
                      tuple(members), tuple(history), case.deadline_ms is not None))
    return sorted(cases, key=repr)


def test_chunks_leave_the_cases_as_one_change_at_a_time_does(relational: RelationalSettings,
                                                             request: pytest.FixtureRequest,
                                                             tmp_path: Path) -> None:
    def fresh() -> RelationalSettings:
        """An empty database for each run (SQLite: the run's own directory)."""
        if relational.kind is RelationalKind.SQLITE:
            return relational
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return RelationalSettings(kind=RelationalKind.POSTGRESQL, postgresql=server.create_database())

    one_by_one = apply(fresh(), tmp_path / "one", 1)
    # Enough happened for the comparison to mean something: joins, sensor and person cases, rework-free
    # closures by the sensors and by themselves, cases still open.
    *cases, (_, evaluated) = one_by_one
    assert len(cases) > 30 and evaluated[0] == len(cases)
    outcomes = {(case[2].value, case[3].value if case[3] else None) for case in cases}
    assert outcomes >= {("closed", "verified_by_sensor"), ("closed", "resolved_by_itself"),
                        ("registered", None)}
    assert any(len(case[5]) > 1 for case in cases)
    assert all(case[7] for case in cases if case[2] is not CaseState.CLOSED)
    for chunk in (7, 50, 10_000):
        assert apply(fresh(), tmp_path / f"chunk-{chunk}", chunk) == one_by_one, chunk
