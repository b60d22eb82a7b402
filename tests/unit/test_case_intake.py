"""The case intake: violation changes handed off the pipeline's thread, applied in order, a full queue
dropping (embedded) or waiting (the api role's topic reader), and a barrier before offsets are committed."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from core.case_settings import CaseSettings
from core.metrics import Metrics
from core.models import Violation, ViolationStatus
from core.settings import RelationalSettings, Settings
from processors.cases import intake_process
from processors.cases.intake import CaseIntake
from processors.cases.intake_process import CaseIntakeProcess, CaseIntakeProcessError
from processors.cases.model import CaseState
from processors.cases.routing import CaseRouter
from processors.cases.service import CaseService
from processors.outputs.feed import FeedEntry
from store.cases import CaseQuery, CaseStore
from tests.support.alerts import violation
from tests.support.wait import wait_for

SETTINGS = CaseSettings.model_validate({"routes": [
    {"match": {"types": ["bin_overflow"]}, "department": "sanitation", "category": "0101"}]})


@pytest.fixture
def service(tmp_path: Path) -> Iterator[CaseService]:
    store = CaseStore.open(RelationalSettings(), tmp_path)
    yield CaseService(store, CaseRouter(SETTINGS, "Asia/Shanghai"))
    store.close()


def changes(*devices: str) -> list[FeedEntry]:
    """An overflow opened at each device, in turn."""
    return [FeedEntry(seq, violation(seq, type="bin_overflow", device=device, status=ViolationStatus.OPEN), 0)
            for seq, device in enumerate(devices, start=1)]


def test_the_barrier_returns_once_every_change_handed_over_is_applied(service: CaseService) -> None:
    intake = CaseIntake(service)
    intake.start()
    try:
        intake(changes("bin-1"))
        intake.barrier()
        [case] = service.store.query(CaseQuery()).items
        assert case.state is CaseState.REGISTERED and intake.applied == 1
    finally:
        intake.stop()


def test_openings_no_route_takes_are_not_queued_but_every_clearing_is(service: CaseService) -> None:
    metrics = Metrics()
    intake = CaseIntake(service, capacity=10)  # not started: what is queued stays queued
    service.report_to(metrics)
    intake([FeedEntry(1, violation(1, type="low_battery", device="bin-1", status=ViolationStatus.OPEN), 0),
            FeedEntry(2, violation(2, type="low_battery", device="bin-1", status=ViolationStatus.CLEARED), 0),
            *changes("bin-2")])
    # The clearing and the overflow.
    assert metrics.registry.get_sample_value("citywatch_case_intake_queue") == 2
    intake.start()
    try:
        intake.barrier()
        [case] = service.store.query(CaseQuery()).items
        assert (case.place, intake.applied, intake.dropped) == ("bin-2", 2, 0)
    finally:
        intake.stop()


def test_a_full_queue_drops_the_change_and_counts_it(service: CaseService) -> None:
    metrics = Metrics()
    intake = CaseIntake(service, capacity=1)
    service.report_to(metrics)
    intake(changes("bin-1", "bin-2"))  # not started: nothing takes the first
    assert intake.dropped == 1
    assert metrics.registry.get_sample_value("citywatch_case_changes_total", {"outcome": "dropped"}) == 1
    assert metrics.registry.get_sample_value("citywatch_case_intake_queue") == 1


def test_waiting_when_full_loses_nothing(service: CaseService) -> None:
    intake = CaseIntake(service, capacity=1, wait_when_full=True)
    intake.start()
    try:
        intake(changes("bin-1", "bin-2", "bin-3"))
        intake.barrier()
        assert sorted(c.place or "" for c in service.store.query(CaseQuery()).items) == ["bin-1", "bin-2",
                                                                                         "bin-3"]
        assert (intake.applied, intake.dropped) == (3, 0)
    finally:
        intake.stop()


def test_stopping_applies_what_is_queued(service: CaseService) -> None:
    intake = CaseIntake(service)
    intake.start()
    intake(changes("bin-1"))
    intake.stop()
    assert len(service.store.query(CaseQuery()).items) == 1


class RefusingService(CaseService):
    """Refuses every transaction holding one given violation, as a store refuses a broken row."""

    def __init__(self, service: CaseService, refused_id: str) -> None:
        super().__init__(service.store, service.router)
        self.refused_id = refused_id
        self.transactions = 0

    def violation_changes(self, violations: Sequence[Violation]) -> None:
        self.transactions += 1
        if any(v.violation_id == self.refused_id for v in violations):
            raise ValueError(f"refused {self.refused_id}")
        super().violation_changes(violations)


def test_a_queued_chunk_is_applied_in_one_transaction(service: CaseService) -> None:
    counting = RefusingService(service, refused_id="none")
    intake = CaseIntake(counting)
    intake(changes("bin-1", "bin-2", "bin-3"))  # queued before the worker starts: one chunk
    intake.start()
    try:
        intake.barrier()
        assert (counting.transactions, intake.applied) == (1, 3)
    finally:
        intake.stop()


def test_a_refused_change_fails_alone_and_the_rest_of_its_chunk_is_applied(
        service: CaseService, caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    refusing = RefusingService(service, refused_id="v0002")
    intake = CaseIntake(refusing)
    refusing.report_to(metrics)
    intake(changes("bin-1", "bin-2", "bin-3"))
    intake.start()
    try:
        intake.barrier()
    finally:
        intake.stop()
    assert sorted(c.place or "" for c in service.store.query(CaseQuery()).items) == ["bin-1", "bin-3"]
    assert (intake.applied, intake.failed) == (2, 1)
    assert metrics.registry.get_sample_value("citywatch_case_changes_total", {"outcome": "failed"}) == 1
    assert metrics.registry.get_sample_value("citywatch_case_changes_total", {"outcome": "applied"}) == 2
    [refused] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert refused.getMessage().startswith("cases: the change v0002:open:")
    assert refused.getMessage().endswith(" was refused")


def test_a_large_hand_off_is_applied_in_order_in_chunks_of_at_most_1000(service: CaseService) -> None:
    """The feed hands changes over in lists; one larger than a chunk is split, and the order holds across
    the split: an overflow that clears and opens again at the same bin makes a second case."""
    counting = RefusingService(service, refused_id="none")
    intake = CaseIntake(counting)
    opened = changes(*(f"bin-{n}" for n in range(1, 1100)))  # v0001..v1099
    cleared = FeedEntry(1100, violation(1, type="bin_overflow", device="bin-1",
                                       status=ViolationStatus.CLEARED, updated_offset_ms=1), 0)
    again = FeedEntry(1101, violation(1200, type="bin_overflow", device="bin-1"), 0)
    intake([*opened, cleared, again])
    intake.start()
    try:
        intake.barrier()
    finally:
        intake.stop()
    assert (counting.transactions, intake.applied) == (2, 1101)
    at_bin_1 = [c for c in service.store.query(CaseQuery(limit=2000)).items if c.place == "bin-1"]
    assert sorted(c.state for c in at_bin_1) == [CaseState.CLOSED, CaseState.REGISTERED]


# `citywatch up`: the same intake, its chunks applied in a child process (processors/cases/intake_process.py).

def process_intake(service: CaseService, tmp_path: Path, **pace: int) -> CaseIntakeProcess:
    """`pace`: CaseIntakeProcess's `yielding_until` and `caught_up`."""
    settings = Settings.model_validate({"cases": SETTINGS.model_dump(mode="json"),
                                        "store": {"data_dir": str(tmp_path)}})
    return CaseIntakeProcess(service, settings, tmp_path, **pace)


def test_a_child_process_applies_the_chunks_and_the_barrier_waits_for_it(service: CaseService,
                                                                         tmp_path: Path) -> None:
    metrics = Metrics()
    intake = process_intake(service, tmp_path)
    service.report_to(metrics)
    intake.start()
    try:
        intake(changes("bin-1", "bin-2"))
        intake([FeedEntry(3, violation(1, type="bin_overflow", device="bin-1", status=ViolationStatus.CLEARED,
                                       updated_offset_ms=1), 0)])
        intake.barrier()
        cases = {c.place: c for c in service.store.query(CaseQuery()).items}  # read in this process
        assert (cases["bin-1"].state, cases["bin-2"].state) == (CaseState.CLOSED, CaseState.REGISTERED)
        assert (intake.applied, intake.failed) == (3, 0)
        assert metrics.registry.get_sample_value("citywatch_case_changes_total", {"outcome": "applied"}) == 3
        child = intake.child_pid
        assert child is not None and child != os.getpid()
    finally:
        intake.stop()
    assert intake.child_pid is None


def test_stopping_drains_the_queue_through_the_child(service: CaseService, tmp_path: Path) -> None:
    intake = process_intake(service, tmp_path)
    intake.start()
    intake(changes(*(f"bin-{n}" for n in range(40))))
    intake.stop()
    assert len(service.store.query(CaseQuery(limit=100)).items) == 40 and intake.applied == 40


def test_a_killed_child_is_replaced_for_the_next_chunk(service: CaseService, tmp_path: Path) -> None:
    intake = process_intake(service, tmp_path)
    intake.start()
    try:
        intake(changes("bin-1"))
        intake.barrier()
        first = intake.child_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not process_alive(first), 10, 0.05, "the child to die")
        intake(changes("bin-1", "bin-2")[1:])
        intake.barrier()
        assert intake.child_pid not in (None, first)
        assert sorted(c.place or "" for c in service.store.query(CaseQuery()).items) == ["bin-1", "bin-2"]
        assert (intake.applied, intake.failed) == (2, 0)
    finally:
        intake.stop()


def scheduling(pid: int) -> tuple[int, int]:
    """The process's scheduling policy and nice value, as `ps -o policy,nice` shows them."""
    return os.sched_getscheduler(pid), os.getpriority(os.PRIO_PROCESS, pid)


def test_the_child_yields_the_cpu_while_it_keeps_up(service: CaseService, tmp_path: Path) -> None:
    intake = process_intake(service, tmp_path)
    intake.start()
    try:
        intake(changes("bin-1"))
        intake.barrier()
        assert intake.child_pid is not None
        assert scheduling(intake.child_pid) == (os.SCHED_IDLE, 10)
    finally:
        intake.stop()


def behind_after_first_chunk(service: CaseService, tmp_path: Path, caught_up: int) -> CaseIntakeProcess:
    """An intake whose child falls behind at 100 queued changes and yields again at `caught_up`, started,
    handed 1,300 changes at once (a chunk takes up to 1,000, so 300 are queued behind the first) and
    drained."""
    intake = process_intake(service, tmp_path, yielding_until=100, caught_up=caught_up)
    intake.start()
    intake(changes(*(f"bin-{n}" for n in range(1300))))
    intake.barrier()
    return intake


def test_a_child_that_falls_behind_is_replaced_by_one_with_a_share_of_the_cpu(
        service: CaseService, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="processors.cases.intake_process")
    intake = behind_after_first_chunk(service, tmp_path, caught_up=-1)  # never caught up
    try:
        assert intake.applied == 1300 and len(service.store.query(CaseQuery(limit=2000)).items) == 1300
        assert intake.child_pid is not None
        assert scheduling(intake.child_pid) == (os.SCHED_OTHER, 10)
        assert [record.getMessage() for record in caplog.records] == [
            "cases: 300 violation changes queued; the case intake process takes a share of the CPU until it "
            "catches up"]
    finally:
        intake.stop()


def test_a_child_that_caught_up_yields_the_cpu_again(service: CaseService, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="processors.cases.intake_process")
    intake = behind_after_first_chunk(service, tmp_path, caught_up=10)
    try:
        assert intake.applied == 1300 and intake.child_pid is not None
        assert scheduling(intake.child_pid) == (os.SCHED_IDLE, 10)
        assert [record.getMessage() for record in caplog.records][-1] == \
            "cases: the case intake process caught up; it yields the CPU again"
    finally:
        intake.stop()


def test_a_child_not_allowed_to_yield_says_so_and_runs_on(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    def refused(pid: int, policy: int, param: os.sched_param) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refused)
    intake_process._yield_cpu()  # as the child calls it: this process stays where it is
    assert [record.getMessage() for record in caplog.records] == [
        "cases: the case intake process could not yield the CPU ([Errno 1] Operation not permitted); it runs "
        "at nice 10"]


def process_alive(pid: int) -> bool:
    """Whether `pid` is still running (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_child_that_cannot_open_the_case_store_fails_the_start(service: CaseService,
                                                                 tmp_path: Path) -> None:
    not_a_directory = tmp_path / "data"
    not_a_directory.write_text("a file where the data directory should be")
    settings = Settings.model_validate({"cases": SETTINGS.model_dump(mode="json"),
                                        "store": {"data_dir": str(not_a_directory)}})
    intake = CaseIntakeProcess(service, settings, not_a_directory)
    with pytest.raises(CaseIntakeProcessError) as refused:
        intake.start()
    assert str(refused.value).startswith("the case intake process exited at start (exit code 1)")
