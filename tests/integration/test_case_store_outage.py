"""The case store's PostgreSQL goes down and comes back: the intake retries the violation change it was
applying, the changes behind it wait in its queue, and nothing is lost or applied twice."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from core.case_settings import CaseSettings
from core.models import ViolationStatus
from core.settings import RelationalKind, RelationalSettings
from processors.cases.intake import CaseIntake, IntakeStopped
from processors.cases.model import CaseState, Resolution
from processors.cases.routing import CaseRouter
from processors.cases.service import CaseService
from processors.outputs.feed import FeedEntry
from store.cases import CaseQuery, CaseStore
from tests.support.alerts import violation
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

SETTINGS = CaseSettings.model_validate({"routes": [
    {"match": {"types": ["bin_overflow"]}, "department": "sanitation", "category": "0101"}]})


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, which it stops and starts (the session's is shared)."""
    server = PostgresServer().start()
    yield server
    server.remove()


def change(seq: int, status: ViolationStatus) -> FeedEntry:
    return FeedEntry(seq, violation(1, type="bin_overflow", device="bin-1", status=status, plate=None), 0)


def test_an_outage_delays_the_cases_and_loses_nothing(own_postgres: PostgresServer,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "processors.cases.intake")
    database = own_postgres.create_database()
    # A short connect timeout: each attempt during the outage fails within a second.
    relational = RelationalSettings(kind=RelationalKind.POSTGRESQL,
                                    postgresql=database.model_copy(update={"connect_timeout_s": 1.0}))
    store = CaseStore.open(relational, own_postgres.directory)
    service = CaseService(store, CaseRouter(SETTINGS, "Asia/Shanghai"))
    intake = CaseIntake(service)
    intake.start()
    try:
        own_postgres.stop()
        intake([change(1, ViolationStatus.OPEN), change(2, ViolationStatus.CLEARED)])
        wait_for(lambda: any(r.getMessage().endswith("; retrying") for r in caplog.records), 10,
                 message="the intake to find the store unavailable")
        assert (intake.applied, intake.failed) == (0, 0)
        own_postgres.start()
        intake.barrier()
        assert (intake.applied, intake.failed) == (2, 0)
        [case] = store.query(CaseQuery()).items
        assert (case.state, case.resolution) == (CaseState.CLOSED, Resolution.RESOLVED_BY_ITSELF)
    finally:
        intake.stop()
        store.close()


def test_a_stop_during_an_outage_keeps_the_reader_from_committing(own_postgres: PostgresServer) -> None:
    """The api role's reader waits at the barrier before it commits its offsets; when the intake gives
    the queued changes up at a stop, the barrier raises instead of returning, so the offsets stay where
    they were and a restart reads those changes again."""
    database = own_postgres.create_database()
    relational = RelationalSettings(kind=RelationalKind.POSTGRESQL,
                                    postgresql=database.model_copy(update={"connect_timeout_s": 1.0}))
    store = CaseStore.open(relational, own_postgres.directory)
    intake = CaseIntake(CaseService(store, CaseRouter(SETTINGS, "Asia/Shanghai")), wait_when_full=True)
    intake.start()
    outcome: list[BaseException | None] = []

    def reader() -> None:
        try:
            intake.barrier()
            outcome.append(None)
        except IntakeStopped as exc:
            outcome.append(exc)

    try:
        own_postgres.stop()
        intake([change(1, ViolationStatus.OPEN)])
        waiting = threading.Thread(target=reader, daemon=True)
        waiting.start()
        intake.stop(timeout_s=1.0)
        waiting.join(10)
        assert [type(exc) for exc in outcome] == [IntakeStopped]
        assert (intake.applied, intake.failed) == (0, 1)
    finally:
        store.close()
