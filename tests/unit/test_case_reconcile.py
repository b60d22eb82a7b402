"""`citywatch up` after a kill: the violation changes its case intake had queued are gone with the
process, but the violation store holds every change before the intake is handed it, so at start the cases
re-derive them from it (AlertComponents.reconcile_cases): a violation still open without a case gets one,
a clearing the case never saw closes it, and what the cases already have changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.alerts.components import AlertComponents
from core.models import Violation, ViolationStatus
from core.settings import Settings
from processors.cases.model import CaseState, Resolution
from store.cases import CaseQuery
from store.sqlite_store import SqliteStore
from tests.support.alerts import violation

CASES = {"routes": [{"match": {"types": ["bin_overflow"]}, "department": "sanitation", "category": "0101"}]}


@pytest.fixture
def components(tmp_path: Path) -> Iterator[AlertComponents]:
    built = AlertComponents(Settings.model_validate({"cases": CASES}), tmp_path)
    yield built
    built.stop()


@pytest.fixture
def violations(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore.in_directory(tmp_path)
    yield store
    store.close()


def overflow(n: int, device: str, status: ViolationStatus = ViolationStatus.OPEN) -> Violation:
    return violation(n, type="bin_overflow", device=device, status=status, plate=None,
                     updated_offset_ms=0 if status is ViolationStatus.OPEN else 60_000)


def test_a_restart_re_derives_the_openings_and_clearings_the_cases_missed(
        components: AlertComponents, violations: SqliteStore) -> None:
    cases = components.cases
    # Before the kill the cases took bin-1's and bin-2's openings; bin-3's opening, bin-2's clearing and
    # every change of the unrouted low battery were still queued (lost).
    cases.violation_changes([overflow(1, "bin-1"), overflow(2, "bin-2")])
    violations.write_violations([
        overflow(1, "bin-1"), overflow(2, "bin-2", ViolationStatus.CLEARED), overflow(3, "bin-3"),
        violation(4, type="low_battery", device="bin-4", plate=None)])
    violations.flush()

    components.reconcile_cases(violations)

    by_place = {case.place: case for case in cases.store.query(CaseQuery()).items}
    assert sorted(place or "" for place in by_place) == ["bin-1", "bin-2", "bin-3"]
    assert by_place["bin-1"].state is CaseState.REGISTERED and by_place["bin-1"].open_violations == 1
    assert (by_place["bin-2"].state, by_place["bin-2"].resolution) == (CaseState.CLOSED,
                                                                      Resolution.RESOLVED_BY_ITSELF)
    assert [m.violation_id for m in cases.store.violations(by_place["bin-3"].case_id)] == ["v0003"]
    history = [(e.actor, e.to_state) for e in cases.store.history(by_place["bin-1"].case_id)]

    components.reconcile_cases(violations)  # again: nothing changes
    assert {case.place: case for case in cases.store.query(CaseQuery()).items} == by_place
    assert [(e.actor, e.to_state) for e in cases.store.history(by_place["bin-1"].case_id)] == history
