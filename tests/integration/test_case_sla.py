"""The SLA clock on cases, on SQLite and on PostgreSQL: deadlines from the cases.sla policy, kept through
suspensions and re-dispatch; warnings and breaches claimed once across replicas, a breach escalating the
case; the events delivered through the outbox at least once, each once across replicas and restarts in the
normal case; a version 1 database brought to version 2, a version 2 one to version 3."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from api.alerts.case_event_relay import CaseEventRelay
from core.case_settings import CasePriority, CaseSettings
from core.settings import RelationalKind, RelationalSettings
from processors.cases.calendar import SlaStatus
from processors.cases.model import SLA_ACTOR, CaseState
from processors.cases.routing import CaseRouter
from processors.cases.service import EVENT_LEASE_MS, CaseService, NewCase
from processors.cases.sla import CaseEventKind, CaseSlaEvent, SlaSignals, sla_status
from processors.cases.states import TransitionRequest
from processors.outputs.feed import ViolationFeed
from store.cases import SCHEMA_VERSION, CaseStore
from store.relational import NewerSchema, Schema, open_database

S = CaseState
ZONE = ZoneInfo("Asia/Shanghai")
SETTINGS = CaseSettings.model_validate({
    "sla": {"calendars": {"city_hall": {"hours": ["08:30-12:00", "14:00-18:00"]},
                          "round_the_clock": {"around_the_clock": True}},
            "calendar": "city_hall",
            "priorities": {"high": {"allowance_minutes": 240}, "normal": {"allowance_minutes": 120}},
            "overrides": [{"department": "water", "calendar": "round_the_clock"}]},
    "departments": {"sanitation": {"supervisor": "city_inspection"}},
})


def local_ms(text: str) -> int:
    """'2026-12-07 09:00' in the city's time (Monday 7 December 2026)."""
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=ZONE).timestamp() * 1000)


class Clock:
    def __init__(self, text: str) -> None:
        self.now = local_ms(text)

    def at(self, text: str) -> None:
        self.now = local_ms(text)

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock("2026-12-07 09:00")


@pytest.fixture
def open_service(tmp_path: Path, relational: RelationalSettings,
                 clock: Clock) -> Iterator[Callable[..., CaseService]]:
    """Services over one database (api replicas), all reading the same clock."""
    stores: list[CaseStore] = []

    def open_one(settings: CaseSettings = SETTINGS) -> CaseService:
        store = CaseStore.open(relational, tmp_path)
        stores.append(store)
        return CaseService(store, CaseRouter(settings, "Asia/Shanghai"), now_ms=clock)

    yield open_one
    for store in stores:
        store.close()


def new_case(service: CaseService, *, priority: CasePriority = CasePriority.HIGH,
             department: str = "sanitation") -> str:
    return service.create(NewCase(type="pothole", description="a hole", department=department,
                                  priority=priority), "k1").case_id


def move(service: CaseService, case_id: str, to: CaseState, **fields: str) -> None:
    service.transition(case_id, TransitionRequest(to=to, **fields), "k1")


def test_a_case_is_due_after_its_allowance_of_working_time(open_service: Callable[..., CaseService],
                                                           clock: Clock) -> None:
    service = open_service()
    clock.at("2026-12-07 11:00")
    case = service.store.get(new_case(service, priority=CasePriority.NORMAL))
    assert case is not None
    # Two working hours: 11:00-12:00, then 14:00-15:00; warned at 80%: 96 minutes in.
    assert case.deadline_ms == local_ms("2026-12-07 15:00")
    assert case.warning_ms == local_ms("2026-12-07 14:36")
    assert sla_status(case, local_ms("2026-12-07 14:00")) is SlaStatus.WITHIN
    assert sla_status(case, local_ms("2026-12-07 14:36")) is SlaStatus.WARNING
    assert sla_status(case, local_ms("2026-12-07 15:00") + 1) is SlaStatus.OVERDUE


def test_a_suspension_stops_the_clock_until_the_case_resumes(open_service: Callable[..., CaseService],
                                                             clock: Clock) -> None:
    service = open_service()
    case_id = new_case(service)  # Monday 09:00, four working hours: due Monday 15:00
    clock.at("2026-12-07 10:00")
    move(service, case_id, S.SUSPENDED, reason="waiting for a crane")
    suspended = service.store.get(case_id)
    assert suspended is not None and suspended.deadline_ms is None and suspended.warning_ms is None
    assert sla_status(suspended, local_ms("2026-12-08 09:00")) is None
    clock.at("2026-12-08 10:00")
    move(service, case_id, S.REGISTERED)
    resumed = service.store.get(case_id)
    assert resumed is not None
    # One hour used before the suspension, three after it: Tuesday 10:00-12:00 and 14:00-15:00.
    assert resumed.deadline_ms == local_ms("2026-12-08 15:00")
    assert resumed.suspended_ms == local_ms("2026-12-08 10:00") - local_ms("2026-12-07 10:00")
    assert resumed.suspended_since_ms is None


def test_a_second_suspension_leaves_out_the_first_as_well(open_service: Callable[..., CaseService],
                                                          clock: Clock) -> None:
    service = open_service()
    case_id = new_case(service)
    clock.at("2026-12-07 10:00")
    move(service, case_id, S.SUSPENDED, reason="crane")
    clock.at("2026-12-07 11:00")
    move(service, case_id, S.REGISTERED)
    clock.at("2026-12-07 11:30")
    move(service, case_id, S.SUSPENDED, reason="road closed")
    clock.at("2026-12-07 14:30")
    move(service, case_id, S.REGISTERED)
    case = service.store.get(case_id)
    # Used: 09:00-10:00 and 11:00-11:30; the remaining 2.5 hours from 14:30: due 17:00.
    assert case is not None and case.deadline_ms == local_ms("2026-12-07 17:00")


def test_re_dispatch_keeps_counting_from_registration_in_the_new_departments_terms(
        open_service: Callable[..., CaseService], clock: Clock) -> None:
    service = open_service()
    case_id = new_case(service)
    clock.at("2026-12-07 10:00")
    move(service, case_id, S.DISPATCHED)
    move(service, case_id, S.RETURNED, reason="a water main, not ours")
    returned = service.store.get(case_id)
    assert returned is not None and returned.deadline_ms == local_ms("2026-12-07 15:00")
    move(service, case_id, S.DISPATCHED, department="water")
    case = service.store.get(case_id)
    # Water counts around the clock: four hours from registration at 09:00.
    assert case is not None and case.deadline_ms == local_ms("2026-12-07 13:00")
    assert case.returns == 1


def test_each_warning_and_breach_is_claimed_once_by_one_of_two_replicas(
        open_service: Callable[..., CaseService], clock: Clock) -> None:
    first, second = open_service(), open_service()
    case_id = new_case(first)  # due 15:00, warned at 14:12 (192 of 240 minutes)
    clock.at("2026-12-07 14:00")
    assert first.claim_sla_signals() == [] and second.claim_sla_signals() == []
    clock.at("2026-12-07 14:12")
    [warning] = first.claim_sla_signals()
    assert (warning.kind, warning.case.case_id, warning.due_ms) == (
        CaseEventKind.SLA_WARNING, case_id, local_ms("2026-12-07 14:12"))
    assert second.claim_sla_signals() == []
    clock.at("2026-12-07 15:00")
    assert second.claim_sla_signals() == []  # closing at the deadline is still on time
    clock.now += 1
    claims: list[list[object]] = []
    threads = [threading.Thread(target=lambda s=s: claims.append(list(s.claim_sla_signals())))
               for s in (first, second) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    breaches = [event for events in claims for event in events]
    assert len(breaches) == 1
    [breach] = breaches
    assert breach.kind is CaseEventKind.SLA_BREACH and breach.due_ms == local_ms("2026-12-07 15:00")
    assert breach.case.escalated_to == "city_inspection"
    case = first.store.get(case_id)
    assert case is not None
    assert (case.department, case.escalated_to, case.state) == ("sanitation", "city_inspection", S.REGISTERED)
    assert case.warning_signalled_ms == local_ms("2026-12-07 14:12")
    assert case.breach_signalled_ms == local_ms("2026-12-07 15:00") + 1
    escalation = first.store.history(case_id)[-1]
    assert (escalation.actor, escalation.department, escalation.from_state, escalation.to_state) == (
        SLA_ACTOR, "city_inspection", S.REGISTERED, S.REGISTERED)
    assert "escalated to city_inspection" in escalation.note
    # A restart (a new service on the same database) claims nothing again.
    assert open_service().claim_sla_signals() == []


def test_escalation_can_make_the_supervisor_the_owner(open_service: Callable[..., CaseService],
                                                      clock: Clock) -> None:
    settings = SETTINGS.model_copy(update={"escalation": SETTINGS.escalation.model_copy(
        update={"supervisor": "city_inspection", "reassign": True}), "departments": {}})
    service = open_service(settings)
    case_id = new_case(service, department="parks")
    clock.at("2026-12-07 16:00")
    kinds = [event.kind for event in service.claim_sla_signals()]
    assert kinds == [CaseEventKind.SLA_WARNING, CaseEventKind.SLA_BREACH]
    case = service.store.get(case_id)
    assert case is not None and (case.department, case.escalated_to) == ("city_inspection", "city_inspection")


def test_a_warning_is_not_repeated_when_a_suspension_moves_it_but_a_new_deadline_breaches_again(
        open_service: Callable[..., CaseService], clock: Clock) -> None:
    service = open_service()
    case_id = new_case(service)
    clock.at("2026-12-07 14:20")
    assert [e.kind for e in service.claim_sla_signals()] == [CaseEventKind.SLA_WARNING]
    move(service, case_id, S.SUSPENDED, reason="crane")
    clock.at("2026-12-08 09:00")
    assert service.claim_sla_signals() == []  # suspended: no deadline to pass
    move(service, case_id, S.REGISTERED)
    clock.at("2026-12-08 09:30")
    assert service.claim_sla_signals() == []
    # 40 minutes were left at the suspension: due Tuesday 09:40.
    clock.at("2026-12-08 09:41")
    assert [e.kind for e in service.claim_sla_signals()] == [CaseEventKind.SLA_BREACH]


def test_a_closed_case_is_not_signalled(open_service: Callable[..., CaseService], clock: Clock) -> None:
    service = open_service()
    case_id = new_case(service)
    for to, fields in ((S.DISPATCHED, {}), (S.ACCEPTED, {}), (S.IN_PROGRESS, {}),
                       (S.REPORTED_DONE, {"note": "filled", "photo_url": "https://x.example/p.jpg"}),
                       (S.VERIFIED, {}), (S.CLOSED, {})):
        move(service, case_id, to, **fields)
    clock.at("2026-12-09 09:00")
    assert service.claim_sla_signals() == []


VERSION_1_TABLES = """
CREATE TABLE IF NOT EXISTS cases (
    case_id          TEXT PRIMARY KEY,
    type             TEXT NOT NULL,
    state            TEXT NOT NULL,
    priority         TEXT NOT NULL,
    verify           TEXT NOT NULL,
    origin           TEXT NOT NULL,
    created_by       TEXT NOT NULL,
    created_time_ms  {int} NOT NULL,
    updated_time_ms  {int} NOT NULL,
    description      TEXT NOT NULL,
    department       TEXT,
    assignee         TEXT,
    category         TEXT,
    place            TEXT,
    grid             TEXT,
    district         TEXT,
    lat              {real},
    lon              {real},
    photo_url        TEXT,
    closed_time_ms   {int},
    resolution       TEXT,
    suspended_from   TEXT,
    returned_by      TEXT,
    open_violations  INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS cases_one_open_per_place ON cases (type, place)
    WHERE state <> 'closed' AND place IS NOT NULL;
CREATE INDEX IF NOT EXISTS cases_by_time ON cases (created_time_ms, case_id);
CREATE TABLE IF NOT EXISTS case_violations (
    violation_id     TEXT PRIMARY KEY,
    case_id          TEXT NOT NULL,
    joined_time_ms   {int} NOT NULL,
    cleared_time_ms  {int}
);
CREATE INDEX IF NOT EXISTS case_violations_by_case ON case_violations (case_id);
CREATE TABLE IF NOT EXISTS case_history (
    case_id          TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    time_ms          {int} NOT NULL,
    actor            TEXT NOT NULL,
    from_state       TEXT,
    to_state         TEXT NOT NULL,
    note             TEXT NOT NULL,
    assignee         TEXT,
    department       TEXT,
    photo_url        TEXT,
    reason           TEXT,
    PRIMARY KEY (case_id, seq)
);"""


def test_a_version_1_database_gains_the_sla_columns_and_its_counts(
        tmp_path: Path, relational: RelationalSettings, clock: Clock) -> None:
    ddl = VERSION_1_TABLES.format(int="INTEGER", real="REAL") if relational.kind is RelationalKind.SQLITE \
        else VERSION_1_TABLES.format(int="BIGINT", real="DOUBLE PRECISION")
    old = open_database(relational, tmp_path, "cases.sqlite3", Schema("cases", ddl, ddl))
    t = local_ms("2026-12-07 09:00")
    old.execute("INSERT INTO cases (case_id, type, state, priority, verify, origin, created_by, "
                "created_time_ms, updated_time_ms, description, department, open_violations) "
                "VALUES ('c_old', 'pothole', 'dispatched', 'high', 'person', 'manual', 'k1', ?, ?, 'x', "
                "'sanitation', 0)", (t, t))
    history = [(1, t, None, "registered"), (2, t + 60_000, "registered", "suspended"),
               (3, t + 3_660_000, "suspended", "registered"), (4, t + 3_700_000, "registered", "dispatched"),
               (5, t + 3_800_000, "dispatched", "returned"), (6, t + 3_900_000, "returned", "dispatched")]
    for seq, time_ms, from_state, to_state in history:
        old.execute("INSERT INTO case_history (case_id, seq, time_ms, actor, from_state, to_state, note) "
                    "VALUES ('c_old', ?, ?, 'k1', ?, ?, '')", (seq, time_ms, from_state, to_state))
    old.close()

    store = CaseStore.open(relational, tmp_path)
    try:
        case = store.get("c_old")
        assert case is not None
        assert (case.reworked, case.returns, case.suspended_ms, case.deadline_ms) == (0, 1, 3_600_000, None)
        version = store._db.execute("SELECT version FROM case_schema").rows
        assert version == [(SCHEMA_VERSION,)] == [(3,)]
        clock.at("2026-12-07 11:00")
        service = CaseService(store, CaseRouter(SETTINGS, "Asia/Shanghai"), now_ms=clock)
        assert service.start_clocks() == 1
        timed = store.get("c_old")
        # Four working hours from 09:00 with 09:01-10:01 suspended: due 15:00 + 1 h.
        assert timed is not None and timed.deadline_ms == local_ms("2026-12-07 16:00")
        assert service.start_clocks() == 0
        # Numbered in the migration: evaluation reads it.
        assert list(store.evaluation_columns(t - 3_600_000, t + 3_600_000, t).registered_ms) == [t]
    finally:
        store.close()
    # Opened again: nothing to migrate, the version stays.
    CaseStore.open(relational, tmp_path).close()


# The outbox of SLA events (docs/cases.md, "Delivery of SLA events").

class FeedDown(RuntimeError):
    pass


def collect(into: list[CaseSlaEvent]) -> Callable[[list[CaseSlaEvent]], None]:
    return into.extend


def keys(events: list[CaseSlaEvent]) -> list[str]:
    return [event.idempotency_key for event in events]


def test_an_event_claimed_just_before_a_crash_is_published_once_after_the_restart(
        open_service: Callable[..., CaseService], clock: Clock) -> None:
    crashed = open_service()
    case_id = new_case(crashed)
    clock.at("2026-12-07 14:20")
    [warning] = crashed.claim_sla_signals()  # claimed, then the process died before the hand-off
    restarted = open_service()
    published: list[CaseSlaEvent] = []
    assert keys(restarted.publish_case_events(collect(published))) == [
        f"{case_id}:case_sla_warning:{local_ms('2026-12-07 14:12')}"] == keys([warning])
    [event] = published
    assert (event.kind, event.case, event.due_ms, event.signalled_ms) == (
        warning.kind, warning.case, warning.due_ms, warning.signalled_ms)
    assert restarted.publish_case_events(collect(published)) == []
    assert open_service().publish_case_events(collect(published)) == []
    assert len(published) == 1 and restarted.store.unpublished_events() == 0


def test_a_failed_hand_off_leaves_the_event_for_the_next_pass(open_service: Callable[..., CaseService],
                                                               clock: Clock) -> None:
    service = open_service()
    new_case(service)
    clock.at("2026-12-07 16:00")
    claimed = service.claim_sla_signals()
    assert [e.kind for e in claimed] == [CaseEventKind.SLA_WARNING, CaseEventKind.SLA_BREACH]

    def feed_down(events: list[CaseSlaEvent]) -> None:
        raise FeedDown("the feed refused")

    with pytest.raises(FeedDown):
        service.publish_case_events(feed_down)
    published: list[CaseSlaEvent] = []
    # Oldest first, each once.
    assert keys(service.publish_case_events(collect(published))) == keys(claimed) == keys(published)
    assert service.publish_case_events(collect(published)) == [] and len(published) == 2


def test_events_held_by_a_replica_that_died_are_published_by_another_when_the_lease_ends(
        open_service: Callable[..., CaseService], clock: Clock) -> None:
    died, survivor = open_service(), open_service()
    new_case(died)
    clock.at("2026-12-07 14:20")
    claimed = died.claim_sla_signals()
    # It took the events to publish them, then died before marking them published.
    assert len(died.store.lease_events(died.publisher_id, clock.now, EVENT_LEASE_MS, 10)) == 1
    published: list[CaseSlaEvent] = []
    assert survivor.publish_case_events(collect(published)) == []  # still held
    clock.now += EVENT_LEASE_MS
    assert keys(survivor.publish_case_events(collect(published))) == keys(claimed)
    assert survivor.publish_case_events(collect(published)) == [] and len(published) == 1


def test_two_replicas_publish_each_event_once_in_order(open_service: Callable[..., CaseService],
                                                        clock: Clock) -> None:
    first, second = open_service(), open_service()
    for _ in range(12):
        new_case(first)
    clock.at("2026-12-07 16:00")
    claimed = first.claim_sla_signals()
    assert len(claimed) == 24
    published: dict[str, list[CaseSlaEvent]] = {"first": [], "second": []}

    def publish_all(name: str, service: CaseService) -> None:
        for _ in range(6):
            service.publish_case_events(collect(published[name]), limit=5)

    threads = [threading.Thread(target=publish_all, args=item)
               for item in (("first", first), ("second", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    both = published["first"] + published["second"]
    assert sorted(keys(both)) == sorted(keys(claimed))  # every one, each once
    order = {key: index for index, key in enumerate(keys(claimed))}
    for events in published.values():
        assert [order[key] for key in keys(events)] == sorted(order[key] for key in keys(events))


def test_the_signal_poller_delivers_claimed_events_to_the_feed_even_when_a_claim_fails(
        open_service: Callable[..., CaseService], clock: Clock) -> None:
    service = open_service()
    case_id = new_case(service)
    clock.at("2026-12-07 14:20")
    service.claim_sla_signals()
    feed = ViolationFeed(100)

    def store_down() -> list[CaseSlaEvent]:
        raise FeedDown("no database")

    signals = SlaSignals(store_down, lambda: service.publish_case_events(feed.publish_case_events))
    assert [e.case.case_id for e in signals.poll()] == [case_id]
    [entry] = feed.read_after(0, 10)
    assert entry.change == "case_sla_warning"
    assert entry.idempotency_key == f"{case_id}:case_sla_warning:{local_ms('2026-12-07 14:12')}"
    assert signals.poll() == [] and feed.read_after(entry.seq, 10) == []


def test_published_events_are_kept_up_to_a_bound(open_service: Callable[..., CaseService], clock: Clock,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("store.cases.PUBLISHED_EVENTS_KEPT", 3)
    service = open_service()
    for _ in range(4):
        new_case(service)
    clock.at("2026-12-07 16:00")
    claimed = service.claim_sla_signals()
    service.publish_case_events(collect([]))
    kept = service.store._db.execute("SELECT idempotency_key FROM case_events ORDER BY seq").rows
    assert [row[0] for row in kept] == keys(claimed)[-3:]


def test_a_version_2_database_gains_the_outbox(tmp_path: Path, relational: RelationalSettings,
                                               clock: Clock) -> None:
    store = CaseStore.open(relational, tmp_path)
    service = CaseService(store, CaseRouter(SETTINGS, "Asia/Shanghai"), now_ms=clock)
    case_id = new_case(service)
    # As version 2 left it: no outbox table.
    store._db.execute("DROP TABLE case_events")
    store._db.execute("UPDATE case_schema SET version = 2")
    store.close()

    store = CaseStore.open(relational, tmp_path)
    try:
        assert store._db.execute("SELECT version FROM case_schema").rows == [(3,)]
        service = CaseService(store, CaseRouter(SETTINGS, "Asia/Shanghai"), now_ms=clock)
        clock.at("2026-12-07 14:20")
        warning_key = f"{case_id}:case_sla_warning:{local_ms('2026-12-07 14:12')}"
        assert keys(service.claim_sla_signals()) == [warning_key]
        published: list[CaseSlaEvent] = []
        assert len(service.publish_case_events(collect(published))) == 1 == len(published)
    finally:
        store.close()
    # A newer citywatch's database is refused, not silently misread.
    store = CaseStore.open(relational, tmp_path)
    store._db.execute("UPDATE case_schema SET version = 4")
    store.close()
    with pytest.raises(NewerSchema, match="schema version 4"):
        CaseStore.open(relational, tmp_path)


def test_every_replica_streams_each_event_once_whichever_replica_published_it(
        open_service: Callable[..., CaseService], clock: Clock) -> None:
    """The Kafka set-up's api replicas stream SLA events from the shared outbox (CaseEventRelay): one
    replica publishes an event to its dispatch feed, and both replicas' stream feeds get it, once."""
    a, b = open_service(), open_service()
    before = new_case(a)
    clock.at("2026-12-08 15:00")  # its deadline passed before the relays started: not streamed
    a.claim_sla_signals()
    streams = [ViolationFeed(100), ViolationFeed(100)]
    relays = [CaseEventRelay(service.store, feed, 0.1) for service, feed in zip((a, b), streams, strict=True)]
    for relay in relays:
        relay.poll()
    case_id = new_case(b)
    timed = b.store.get(case_id)
    assert timed is not None
    clock.at("2026-12-10 15:00")
    assert keys(b.claim_sla_signals()) == [f"{case_id}:case_sla_warning:{timed.warning_ms}",
                                           f"{case_id}:case_sla_breach:{timed.deadline_ms}"]
    dispatched: list[CaseSlaEvent] = []
    a.publish_case_events(collect(dispatched))  # a publishes, also the events before the relays
    assert before in {event.case.case_id for event in dispatched}
    for relay in relays:
        assert relay.poll() == 2
        assert relay.poll() == 0
    for feed in streams:
        streamed = [entry.case_event for entry in feed.read_after(0, 100)]
        assert [(e.case.case_id, e.kind) for e in streamed if e is not None] == [
            (case_id, CaseEventKind.SLA_WARNING), (case_id, CaseEventKind.SLA_BREACH)]
