"""Cases, the violations they link and their history, in the relational database (store/relational.py):
`cases.sqlite3` under the data directory, or the PostgreSQL database every api replica shares.

Two constraints keep cases single however often a violation change arrives (a replay, a second api
replica): a violation belongs to at most one case (`case_violations.violation_id` is the primary key), and
at most one case is open per (type, place) (a partial unique index). Changes that decide on what is
stored (joining an open case, a transition) run in transactions exclusive on `cases`.

Schema version 2 adds the SLA clock (deadline, warning time, what was signalled, the escalation) and the
counts evaluation reads (reworks, returns, suspended time); a version 1 database gains the columns at
open, its counts filled in from the history (`_migrate`). The version is kept in `case_schema`.

Schema version 3 adds `case_events`, the outbox of SLA events: the transaction that claims a warning or
breach writes its event there, and the publisher leases the unpublished rows, hands them to the feed and
marks them published, so an event survives a crash between the claim and the hand-off (docs/cases.md,
"Delivery of SLA events"). A version 2 database gains the empty table at open.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from core.case_settings import CasePriority, Verification
from core.settings import RelationalKind, RelationalSettings
from processors.cases.evaluation import CaseColumns
from processors.cases.model import Case, CaseOrigin, CaseState, CaseViolation, HistoryEntry, Resolution
from store.case_columns import EvaluationColumns
from store.relational import Database, Executor, Schema, open_migrated, stored_schema_version

FILE_NAME: Final = "cases.sqlite3"
SCHEMA_VERSION: Final = 3

_TABLES: Final = """
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
    open_violations  INTEGER NOT NULL,
    deadline_ms      {int},
    warning_ms       {int},
    warning_signalled_ms {int},
    breach_signalled_ms  {int},
    escalated_to     TEXT,
    reworked         INTEGER NOT NULL DEFAULT 0,
    returns          INTEGER NOT NULL DEFAULT 0,
    suspended_ms     {int} NOT NULL DEFAULT 0,
    suspended_since_ms {int},
    row_number       {int},
    change_seq       {int}
);
CREATE TABLE IF NOT EXISTS case_schema (
    version          INTEGER NOT NULL
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
);
CREATE TABLE IF NOT EXISTS case_events (
    seq              {int} PRIMARY KEY,
    idempotency_key  TEXT NOT NULL UNIQUE,
    kind             TEXT NOT NULL,
    due_ms           {int} NOT NULL,
    signalled_ms     {int} NOT NULL,
    case_row         TEXT NOT NULL,
    lease_owner      TEXT,
    lease_until_ms   {int},
    published_ms     {int}
);
CREATE INDEX IF NOT EXISTS case_events_unpublished ON case_events (seq) WHERE published_ms IS NULL;
CREATE TABLE IF NOT EXISTS case_column_snapshot (
    id               INTEGER PRIMARY KEY,
    format           INTEGER NOT NULL,
    seen_seq         {int} NOT NULL,
    layout           TEXT NOT NULL,
    columns          {blob} NOT NULL
);
"""
# Version 2: (column, SQLite type, PostgreSQL type) added to a version 1 `cases` table.
_ADDED_COLUMNS: Final = (
    ("deadline_ms", "INTEGER", "BIGINT"), ("warning_ms", "INTEGER", "BIGINT"),
    ("warning_signalled_ms", "INTEGER", "BIGINT"), ("breach_signalled_ms", "INTEGER", "BIGINT"),
    ("escalated_to", "TEXT", "TEXT"),
    ("reworked", "INTEGER NOT NULL DEFAULT 0", "INTEGER NOT NULL DEFAULT 0"),
    ("returns", "INTEGER NOT NULL DEFAULT 0", "INTEGER NOT NULL DEFAULT 0"),
    ("suspended_ms", "INTEGER NOT NULL DEFAULT 0", "BIGINT NOT NULL DEFAULT 0"),
    ("suspended_since_ms", "INTEGER", "BIGINT"),
    # Evaluation's in-memory columns (store/case_columns.py): a dense number per case, a number per write.
    ("row_number", "INTEGER", "BIGINT"), ("change_seq", "INTEGER", "BIGINT"),
)
# After the columns exist and are filled: the signal poller's look-ups of open cases not signalled yet,
# and the numbering of cases and writes.
_SLA_INDEXES: Final = (
    "CREATE UNIQUE INDEX IF NOT EXISTS cases_by_row_number ON cases (row_number)",
    "CREATE UNIQUE INDEX IF NOT EXISTS cases_by_change ON cases (change_seq)",
    "CREATE INDEX IF NOT EXISTS cases_warning_due ON cases (warning_ms) WHERE warning_signalled_ms IS NULL",
    "CREATE INDEX IF NOT EXISTS cases_breach_due ON cases (deadline_ms) WHERE breach_signalled_ms IS NULL",
)
SCHEMA: Final = Schema("cases", _TABLES.format(int="INTEGER", real="REAL", blob="BLOB"),
                       _TABLES.format(int="BIGINT", real="DOUBLE PRECISION", blob="BYTEA"))

_CASE_COLUMNS: Final = (
    "case_id", "type", "state", "priority", "verify", "origin", "created_by", "created_time_ms",
    "updated_time_ms", "description", "department", "assignee", "category", "place", "grid", "district",
    "lat", "lon", "photo_url", "closed_time_ms", "resolution", "suspended_from", "returned_by",
    "open_violations", "deadline_ms", "warning_ms", "warning_signalled_ms", "breach_signalled_ms",
    "escalated_to", "reworked", "returns", "suspended_ms", "suspended_since_ms")
_SELECT_CASE: Final = f"SELECT {', '.join(_CASE_COLUMNS)} FROM cases"
_HISTORY_COLUMNS: Final = ("seq", "time_ms", "actor", "from_state", "to_state", "note", "assignee",
                           "department", "photo_url", "reason")


_NEXT_ROW_NUMBER: Final = "(SELECT COALESCE(MAX(row_number), 0) + 1 FROM cases)"
_NEXT_CHANGE: Final = "(SELECT COALESCE(MAX(change_seq), 0) + 1 FROM cases)"
# Published events kept in `case_events` (the newest), to see what went out; older ones are deleted.
PUBLISHED_EVENTS_KEPT: Final = 1000


@dataclass(frozen=True)
class StoredCaseEvent:
    """A row of the `case_events` outbox: an SLA event and the case as it was when it was claimed."""

    seq: int
    kind: str
    case: Case
    due_ms: int
    signalled_ms: int


def new_case_id() -> str:
    return f"c_{secrets.token_hex(8)}"


class InvalidCaseCursor(ValueError):
    """A cursor this store never handed out."""


@dataclass(frozen=True)
class CaseQuery:
    states: Sequence[CaseState] = ()
    departments: Sequence[str] = ()
    types: Sequence[str] = ()
    grids: Sequence[str] = ()
    districts: Sequence[str] = ()
    # The cases these violations belong to.
    violations: Sequence[str] = ()
    # Created in [from_ms, to_ms).
    from_ms: int | None = None
    to_ms: int | None = None
    limit: int = 100
    cursor: str | None = None


@dataclass(frozen=True)
class CasePage:
    items: list[Case] = field(default_factory=list)
    next_cursor: str | None = None


class CaseTransaction:
    """The statements of one exclusive transaction on the cases."""

    def __init__(self, executor: Executor) -> None:
        self._tx = executor

    @property
    def executor(self) -> Executor:
        """The transaction's statements, for the tables kept with the cases (store/open311.py)."""
        return self._tx

    def get(self, case_id: str) -> Case | None:
        row = self._tx.execute(f"{_SELECT_CASE} WHERE case_id = ?", (case_id,)).one()
        return _case_from_row(row) if row is not None else None

    def open_case_at(self, case_type: str, place: str) -> Case | None:
        # The state as a literal, not a parameter: only then can PostgreSQL use the partial index of
        # open cases (its condition must be provable from the query's own text).
        row = self._tx.execute(f"{_SELECT_CASE} WHERE type = ? AND place = ? AND state <> 'closed'",
                               (case_type, place)).one()
        return _case_from_row(row) if row is not None else None

    def insert(self, case: Case, entries: Sequence[HistoryEntry]) -> None:
        placeholders = ", ".join("?" for _ in _CASE_COLUMNS)
        # Numbered under the exclusive lock: the numbers of committed writes only ever grow.
        self._tx.execute(f"INSERT INTO cases ({', '.join(_CASE_COLUMNS)}, row_number, change_seq) "
                         f"VALUES ({placeholders}, {_NEXT_ROW_NUMBER}, {_NEXT_CHANGE})", _case_row(case))
        self._append(case.case_id, entries)

    def update(self, case: Case, entries: Sequence[HistoryEntry]) -> None:
        assignments = ", ".join(f"{column} = ?" for column in _CASE_COLUMNS[1:])
        self._tx.execute(f"UPDATE cases SET {assignments}, change_seq = {_NEXT_CHANGE} WHERE case_id = ?",
                         (*_case_row(case)[1:], case.case_id))
        self._append(case.case_id, entries)

    def link_violation(self, case_id: str, violation_id: str, now_ms: int) -> bool:
        """False when the violation already belongs to a case (this change was handled before)."""
        return self._tx.execute(
            "INSERT INTO case_violations (violation_id, case_id, joined_time_ms) VALUES (?, ?, ?) "
            "ON CONFLICT (violation_id) DO NOTHING", (violation_id, case_id, now_ms)).rowcount == 1

    def is_linked(self, violation_id: str) -> bool:
        return self.case_of(violation_id) is not None

    def case_of(self, violation_id: str) -> str | None:
        """The id of the case the violation belongs to, if any."""
        row = self._tx.execute("SELECT case_id FROM case_violations WHERE violation_id = ?",
                               (violation_id,)).one()
        return str(row[0]) if row is not None else None

    def clear_violation(self, violation_id: str, now_ms: int) -> str | None:
        """The case of a violation that cleared just now; None when it has none or cleared before."""
        row = self._tx.execute(
            "UPDATE case_violations SET cleared_time_ms = ? "
            "WHERE violation_id = ? AND cleared_time_ms IS NULL RETURNING case_id",
            (now_ms, violation_id)).one()
        return str(row[0]) if row is not None else None

    def state_changes(self, case_id: str) -> list[tuple[int, str | None, str]]:
        """(time_ms, from_state, to_state) of the case's history, in order."""
        return [(row[0], row[1], row[2]) for row in self._tx.execute(
            "SELECT time_ms, from_state, to_state FROM case_history WHERE case_id = ? ORDER BY seq",
            (case_id,)).rows]

    def sla_due(self, now_ms: int, limit: int) -> list[Case]:
        """Open cases whose warning time was reached or deadline passed without their signal given."""
        rows = self._tx.execute(
            f"{_SELECT_CASE} WHERE state <> ? AND ((warning_signalled_ms IS NULL AND warning_ms <= ?) "
            "OR (breach_signalled_ms IS NULL AND deadline_ms < ?)) ORDER BY warning_ms, case_id LIMIT ?",
            (CaseState.CLOSED.value, now_ms, now_ms, limit)).rows
        return [_case_from_row(row) for row in rows]

    def add_event(self, kind: str, case: Case, due_ms: int, signalled_ms: int) -> None:
        """The event into the outbox, committed with the claim of its signal; numbered under the exclusive
        lock, so the numbers of committed events only ever grow. One per idempotency key."""
        self._tx.execute(
            "INSERT INTO case_events (seq, idempotency_key, kind, due_ms, signalled_ms, case_row) "
            "VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM case_events), ?, ?, ?, ?, ?) "
            "ON CONFLICT (idempotency_key) DO NOTHING",
            (f"{case.case_id}:{kind}:{due_ms}", kind, due_ms, signalled_ms, json.dumps(_case_row(case))))

    def without_deadline(self, limit: int) -> list[Case]:
        """Open, not suspended cases without a deadline (from before schema version 2)."""
        rows = self._tx.execute(f"{_SELECT_CASE} WHERE deadline_ms IS NULL AND state NOT IN (?, ?) LIMIT ?",
                                (CaseState.CLOSED.value, CaseState.SUSPENDED.value, limit)).rows
        return [_case_from_row(row) for row in rows]

    def _append(self, case_id: str, entries: Sequence[HistoryEntry]) -> None:
        if not entries:
            return
        row = self._tx.execute("SELECT MAX(seq) FROM case_history WHERE case_id = ?", (case_id,)).one()
        last = row[0] if row is not None and row[0] is not None else 0
        for offset, entry in enumerate(entries, start=1):
            self._tx.execute(
                f"INSERT INTO case_history (case_id, {', '.join(_HISTORY_COLUMNS)}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _history_row(case_id, last + offset, entry))


class CaseBatch:
    """A chunk of violation changes in one exclusive transaction, with the statements of CaseTransaction
    that violation changes use, but few round trips to the database: what the chunk touches (the
    memberships of its violations, the open cases at its places and the cases its violations belong to)
    is read up front in a few queries, the changes are applied to that in memory, one after the other as
    they would be applied to the tables, and everything is written at the end in bulk.
    """

    def __init__(self, executor: Executor, violation_ids: Sequence[str],
                 places: Sequence[tuple[str, str]]) -> None:
        self._tx = executor
        self._members: dict[str, list[Any]] = {}  # violation id -> [case id, cleared ms]
        self._cases: dict[str, Case] = {}
        self._open: dict[tuple[str, str], str] = {}  # (type, place) -> the open case's id
        self._new_cases: set[str] = set()
        self._changed_cases: set[str] = set()
        self._new_members: dict[str, tuple[str, int]] = {}  # violation id -> (case id, joined ms)
        self._cleared_before: list[tuple[int, str]] = []  # (cleared ms, violation id) of stored rows
        self._history: dict[str, list[HistoryEntry]] = {}
        ids = list(dict.fromkeys(violation_ids))
        for chunk in _chunks(ids):
            for violation_id, case_id, cleared in executor.execute(
                    "SELECT violation_id, case_id, cleared_time_ms FROM case_violations WHERE violation_id "
                    f"IN ({_marks(chunk)})", chunk).rows:
                self._members[violation_id] = [case_id, cleared]
        case_ids = list({member[0] for member in self._members.values() if member[1] is None})
        for chunk in _chunks(case_ids):
            self._load(executor.execute(f"{_SELECT_CASE} WHERE case_id IN ({_marks(chunk)})", chunk).rows)
        types = list({case_type for case_type, _ in places})
        by_place = list({place for _, place in places})
        for chunk in _chunks(by_place):
            # The state as a literal, as in open_case_at: the partial index of open cases answers it.
            self._load(executor.execute(
                f"{_SELECT_CASE} WHERE type IN ({_marks(types)}) AND place IN ({_marks(chunk)}) "
                "AND state <> 'closed'", [*types, *chunk]).rows)

    def _load(self, rows: list[tuple[Any, ...]]) -> None:
        for row in rows:
            case = _case_from_row(row)
            self._cases[case.case_id] = case
            if case.place is not None and case.state is not CaseState.CLOSED:
                self._open[(case.type, case.place)] = case.case_id

    def get(self, case_id: str) -> Case | None:
        if case_id not in self._cases:
            self._load(self._tx.execute(f"{_SELECT_CASE} WHERE case_id = ?", (case_id,)).rows)
        return self._cases.get(case_id)

    def open_case_at(self, case_type: str, place: str) -> Case | None:
        case_id = self._open.get((case_type, place))
        return self._cases[case_id] if case_id is not None else None

    def is_linked(self, violation_id: str) -> bool:
        return violation_id in self._members

    def link_violation(self, case_id: str, violation_id: str, now_ms: int) -> bool:
        if violation_id in self._members:
            return False
        self._members[violation_id] = [case_id, None]
        self._new_members[violation_id] = (case_id, now_ms)
        return True

    def clear_violation(self, violation_id: str, now_ms: int) -> str | None:
        member = self._members.get(violation_id)
        if member is None or member[1] is not None:
            return None
        member[1] = now_ms
        if violation_id not in self._new_members:
            self._cleared_before.append((now_ms, violation_id))
        return str(member[0])

    def state_changes(self, case_id: str) -> list[tuple[int, str | None, str]]:
        """(time_ms, from_state, to_state) of the case's history, in order: what is stored and what this
        batch added."""
        stored = [] if case_id in self._new_cases else [(row[0], row[1], row[2]) for row in self._tx.execute(
            "SELECT time_ms, from_state, to_state FROM case_history WHERE case_id = ? ORDER BY seq",
            (case_id,)).rows]
        added = [(entry.time_ms, None if entry.from_state is None else entry.from_state.value,
                  entry.to_state.value) for entry in self._history.get(case_id, [])]
        return [*stored, *added]

    def insert(self, case: Case, entries: Sequence[HistoryEntry]) -> None:
        self._new_cases.add(case.case_id)
        self._put(case, entries)

    def update(self, case: Case, entries: Sequence[HistoryEntry]) -> None:
        if case.case_id not in self._new_cases:
            self._changed_cases.add(case.case_id)
        self._put(case, entries)

    def _put(self, case: Case, entries: Sequence[HistoryEntry]) -> None:
        self._cases[case.case_id] = case
        if case.place is not None:
            key = (case.type, case.place)
            if case.state is not CaseState.CLOSED:
                self._open[key] = case.case_id
            elif self._open.get(key) == case.case_id:
                del self._open[key]
        if entries:
            self._history.setdefault(case.case_id, []).extend(entries)

    def flush(self) -> None:
        tx = self._tx
        # Every write numbered as CaseTransaction numbers it (the evaluation reads changed rows by
        # change_seq), from the largest numbers under the same exclusive lock.
        numbers = tx.execute("SELECT COALESCE(MAX(row_number), 0), COALESCE(MAX(change_seq), 0) "
                             "FROM cases").one()
        next_row, next_change = (int(numbers[0]) + 1, int(numbers[1]) + 1) if numbers else (1, 1)
        changed, new = sorted(self._changed_cases), sorted(self._new_cases)
        # Updates first: a case closed in this batch leaves its place free for a case opened after it.
        assignments = ", ".join(f"{column} = ?" for column in _CASE_COLUMNS[1:])
        tx.execute_many(f"UPDATE cases SET {assignments}, change_seq = ? WHERE case_id = ?",
                        [(*_case_row(self._cases[case_id])[1:], next_change + index, case_id)
                         for index, case_id in enumerate(changed)])
        next_change += len(changed)
        placeholders = ", ".join("?" for _ in _CASE_COLUMNS)
        tx.execute_many(f"INSERT INTO cases ({', '.join(_CASE_COLUMNS)}, row_number, change_seq) "
                        f"VALUES ({placeholders}, ?, ?)",
                        [(*_case_row(self._cases[case_id]), next_row + index, next_change + index)
                         for index, case_id in enumerate(new)])
        tx.execute_many("INSERT INTO case_violations (violation_id, case_id, joined_time_ms, "
                        "cleared_time_ms) VALUES (?, ?, ?, ?)",
                        [(violation_id, case_id, joined, self._members[violation_id][1])
                         for violation_id, (case_id, joined) in self._new_members.items()])
        tx.execute_many("UPDATE case_violations SET cleared_time_ms = ? WHERE violation_id = ?",
                        self._cleared_before)
        last_seq: dict[str, int] = {}
        existing = [case_id for case_id in self._history if case_id not in self._new_cases]
        for chunk in _chunks(existing):
            for case_id, seq in tx.execute(f"SELECT case_id, MAX(seq) FROM case_history WHERE case_id IN "
                                           f"({_marks(chunk)}) GROUP BY case_id", chunk).rows:
                last_seq[case_id] = seq or 0
        rows = []
        for case_id, entries in self._history.items():
            last = last_seq.get(case_id, 0)
            for offset, entry in enumerate(entries, start=1):
                rows.append(_history_row(case_id, last + offset, entry))
        tx.execute_many(f"INSERT INTO case_history (case_id, {', '.join(_HISTORY_COLUMNS)}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


_IN_CHUNK: Final = 500  # parameters per IN list


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start:start + _IN_CHUNK]


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


def _history_row(case_id: str, seq: int, entry: HistoryEntry) -> tuple[Any, ...]:
    return (case_id, seq, entry.time_ms, entry.actor,
            entry.from_state.value if entry.from_state is not None else None, entry.to_state.value,
            entry.note, entry.assignee, entry.department, entry.photo_url, entry.reason)


class CaseStore:
    def __init__(self, database: Database) -> None:
        self._db = database
        self._evaluation = EvaluationColumns(database)

    @classmethod
    def open(cls, relational: RelationalSettings, data_dir: Path) -> CaseStore:
        return cls(open_migrated(relational, data_dir, FILE_NAME, SCHEMA, _migrate))

    @property
    def database(self) -> Database:
        """The cases' database, for the stores whose tables live beside the cases' (store/open311.py)."""
        return self._db

    @contextmanager
    def violation_batch(self, violation_ids: Sequence[str],
                        places: Sequence[tuple[str, str]]) -> Iterator[CaseBatch]:
        """A CaseBatch for changes of these violations, opening cases at these (type, place) pairs, in one
        exclusive transaction; its writes are made when the block ends without an error."""
        with self._db.transaction(exclusive="cases") as tx:
            batch = CaseBatch(tx, violation_ids, places)
            yield batch
            batch.flush()

    @contextmanager
    def transaction(self) -> Iterator[CaseTransaction]:
        """All or nothing, and one at a time across processes: what it reads still holds when it writes."""
        with self._db.transaction(exclusive="cases") as tx:
            yield CaseTransaction(tx)

    def get(self, case_id: str) -> Case | None:
        row = self._db.execute(f"{_SELECT_CASE} WHERE case_id = ?", (case_id,)).one()
        return _case_from_row(row) if row is not None else None

    def lease_events(self, owner: str, now_ms: int, lease_ms: int, limit: int) -> list[StoredCaseEvent]:
        """The oldest unpublished events nobody holds (never leased, or their lease expired: the replica
        that held them died before marking them), in order, now held by `owner` until `now_ms + lease_ms`.
        Exclusive: two replicas never lease the same row at once."""
        with self._db.transaction(exclusive="case-events") as tx:
            rows = tx.execute(
                "SELECT seq, kind, case_row, due_ms, signalled_ms FROM case_events "
                "WHERE published_ms IS NULL AND (lease_until_ms IS NULL OR lease_until_ms <= ?) "
                "ORDER BY seq LIMIT ?",
                (now_ms, limit)).rows
            events = [_stored_event(row) for row in rows]
            for chunk in _seq_chunks([event.seq for event in events]):
                tx.execute(f"UPDATE case_events SET lease_owner = ?, lease_until_ms = ? "
                           f"WHERE seq IN ({_marks(chunk)})", (owner, now_ms + lease_ms, *chunk))
        return events

    def events_after(self, seq: int, limit: int) -> list[StoredCaseEvent]:
        """The outbox's events numbered after `seq`, oldest first, published or not (committed claims:
        numbers become visible in order)."""
        rows = self._db.execute("SELECT seq, kind, case_row, due_ms, signalled_ms FROM case_events "
                                "WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)).rows
        return [_stored_event(row) for row in rows]

    def last_event_seq(self) -> int:
        """The number of the newest event in the outbox (0 when there is none)."""
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM case_events").one()
        return int(row[0]) if row is not None else 0

    def events_published(self, owner: str, seqs: Sequence[int], now_ms: int) -> None:
        """The leased events were handed to the feed; the oldest published ones beyond
        PUBLISHED_EVENTS_KEPT are deleted."""
        with self._db.transaction(exclusive="case-events") as tx:
            for chunk in _seq_chunks(seqs):
                tx.execute(f"UPDATE case_events SET published_ms = ?, lease_until_ms = NULL "
                           f"WHERE lease_owner = ? AND seq IN ({_marks(chunk)})", (now_ms, owner, *chunk))
            tx.execute("DELETE FROM case_events WHERE published_ms IS NOT NULL AND seq < "
                       "(SELECT MIN(seq) FROM (SELECT seq FROM case_events WHERE published_ms IS NOT NULL "
                       "ORDER BY seq DESC LIMIT ?) AS kept)", (PUBLISHED_EVENTS_KEPT,))

    def release_events(self, owner: str, seqs: Sequence[int]) -> None:
        """The hand-off failed: the events are free for the next pass, of this replica or another."""
        with self._db.transaction(exclusive="case-events") as tx:
            for chunk in _seq_chunks(seqs):
                tx.execute(f"UPDATE case_events SET lease_owner = NULL, lease_until_ms = NULL "
                           f"WHERE lease_owner = ? AND published_ms IS NULL AND seq IN ({_marks(chunk)})",
                           (owner, *chunk))

    def unpublished_events(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM case_events WHERE published_ms IS NULL").one()
        return int(row[0]) if row is not None else 0

    def linked_violations(self) -> int:
        """How many violations belong to cases."""
        row = self._db.execute("SELECT COUNT(*) FROM case_violations").one()
        return int(row[0]) if row is not None else 0

    def uncleared_violation_ids(self) -> list[str]:
        """The violations in cases whose clearing has not reached their case."""
        return [str(row[0]) for row in self._db.execute(
            "SELECT violation_id FROM case_violations WHERE cleared_time_ms IS NULL").rows]

    def history(self, case_id: str) -> list[HistoryEntry]:
        rows = self._db.execute(f"SELECT {', '.join(_HISTORY_COLUMNS)} FROM case_history WHERE case_id = ? "
                                "ORDER BY seq", (case_id,)).rows
        return [_entry_from_row(row) for row in rows]

    def violations(self, case_id: str) -> list[CaseViolation]:
        rows = self._db.execute("SELECT violation_id, joined_time_ms, cleared_time_ms FROM case_violations "
                                "WHERE case_id = ? ORDER BY joined_time_ms, violation_id", (case_id,)).rows
        return [CaseViolation(violation_id=row[0], joined_time_ms=row[1], cleared_time_ms=row[2])
                for row in rows]

    def query(self, query: CaseQuery) -> CasePage:
        """Newest first (by creation time); `next_cursor` continues after the last item."""
        where: list[str] = []
        params: list[Any] = []
        for column, values in (("state", [s.value for s in query.states]), ("department", query.departments),
                               ("type", query.types), ("grid", query.grids), ("district", query.districts)):
            if values:
                where.append(f"{column} IN ({', '.join('?' for _ in values)})")
                params.extend(values)
        if query.violations:
            where.append("case_id IN (SELECT case_id FROM case_violations WHERE violation_id IN "
                         f"({', '.join('?' for _ in query.violations)}))")
            params.extend(query.violations)
        if query.from_ms is not None:
            where.append("created_time_ms >= ?")
            params.append(query.from_ms)
        if query.to_ms is not None:
            where.append("created_time_ms < ?")
            params.append(query.to_ms)
        if query.cursor is not None:
            created_ms, case_id = _parse_cursor(query.cursor)
            where.append("(created_time_ms < ? OR (created_time_ms = ? AND case_id < ?))")
            params.extend((created_ms, created_ms, case_id))
        sql = _SELECT_CASE + (f" WHERE {' AND '.join(where)}" if where else "")
        rows = self._db.execute(f"{sql} ORDER BY created_time_ms DESC, case_id DESC LIMIT ?",
                                (*params, query.limit + 1)).rows
        items = [_case_from_row(row) for row in rows[:query.limit]]
        more = len(rows) > query.limit
        return CasePage(items, f"{items[-1].created_time_ms}.{items[-1].case_id}" if more else None)

    def evaluation_columns(self, from_ms: int, to_ms: int, now_ms: int) -> CaseColumns:
        """What processors/cases/evaluation.py needs of the cases registered in [from_ms, to_ms) or open at
        `to_ms`, as columns (store/case_columns.py: read once, then only what changed). A case without a
        department, grid or district counts under the empty name."""
        return self._evaluation.columns(from_ms, to_ms, now_ms)

    def warm_evaluation(self) -> None:
        """The evaluation's first read of the cases, done ahead of the first request (at start-up)."""
        self._evaluation.warm()

    def checkpoint_evaluation(self, min_changes: int = 100_000) -> bool:
        """Store a snapshot of the evaluation's columns when `min_changes` cases were written since the
        newest (store/case_columns.py); whether one was stored."""
        return self._evaluation.checkpoint(min_changes)

    def close(self) -> None:
        self._db.close()


def _stored_event(row: tuple[Any, ...]) -> StoredCaseEvent:
    seq, kind, case_row, due_ms, signalled_ms = row
    return StoredCaseEvent(seq=seq, kind=kind, case=_case_from_row(tuple(json.loads(case_row))),
                           due_ms=due_ms, signalled_ms=signalled_ms)


def _seq_chunks(seqs: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(seqs), _IN_CHUNK):
        yield list(seqs[start:start + _IN_CHUNK])


def _migrate(database: Database) -> None:
    """Bring the tables to SCHEMA_VERSION, once however many replicas open them together."""
    with database.transaction(exclusive="schema:cases-version") as tx:
        version = stored_schema_version(tx, "case_schema", "cases", SCHEMA_VERSION)
        if version == SCHEMA_VERSION:
            return
        if database.kind is RelationalKind.SQLITE:
            existing = {r[0] for r in tx.execute("SELECT name FROM pragma_table_info('cases')").rows}
        else:
            existing = {r[0] for r in tx.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'cases' "
                "AND table_schema = current_schema()").rows}
        added = [(name, sqlite if database.kind is RelationalKind.SQLITE else postgresql)
                 for name, sqlite, postgresql in _ADDED_COLUMNS if name not in existing]
        for name, declaration in added:
            tx.execute(f"ALTER TABLE cases ADD COLUMN {name} {declaration}")
        if added:
            _count_from_history(tx)
            tx.execute("UPDATE cases SET row_number = n.number, change_seq = n.number FROM (SELECT case_id, "
                       "ROW_NUMBER() OVER (ORDER BY created_time_ms, case_id) AS number FROM cases) AS n "
                       "WHERE cases.case_id = n.case_id")
        for statement in _SLA_INDEXES:
            tx.execute(statement)
        tx.execute("DELETE FROM case_schema")
        tx.execute("INSERT INTO case_schema (version) VALUES (?)", (SCHEMA_VERSION,))


def _count_from_history(tx: Executor) -> None:
    """Version 1 to 2: the reworks, returns and suspended time of the cases so far, from their history.
    Deadlines stay unset: the SLA clock gives them on its first pass (CaseService.start_clocks)."""
    rows = tx.execute("SELECT case_id, time_ms, from_state, to_state FROM case_history "
                      "WHERE to_state IN ('reopened', 'returned', 'suspended') OR from_state = 'suspended' "
                      "ORDER BY case_id, seq").rows
    counts: dict[str, list[int | None]] = {}
    for case_id, time_ms, from_state, to_state in rows:
        reworked, returns, suspended, since = counts.setdefault(case_id, [0, 0, 0, None])
        if to_state == CaseState.REOPENED.value:
            reworked = (reworked or 0) + 1
        elif to_state == CaseState.RETURNED.value:
            returns = (returns or 0) + 1
        if from_state == CaseState.SUSPENDED.value and since is not None:
            suspended, since = (suspended or 0) + time_ms - since, None
        if to_state == CaseState.SUSPENDED.value:
            since = time_ms
        counts[case_id] = [reworked, returns, suspended, since]
    for case_id, (reworked, returns, suspended, since) in counts.items():
        # A suspension not followed by a resumption is the running one (the case is suspended).
        tx.execute("UPDATE cases SET reworked = ?, returns = ?, suspended_ms = ?, suspended_since_ms = ? "
                   "WHERE case_id = ?",
                   (reworked, returns, suspended, since, case_id))


def _parse_cursor(cursor: str) -> tuple[int, str]:
    created, _, case_id = cursor.partition(".")
    if not created.isdigit() or not case_id:
        raise InvalidCaseCursor(f"cursor {cursor[:40]!r} is not one this API handed out")
    return int(created), case_id


def _case_row(case: Case) -> tuple[Any, ...]:
    return (case.case_id, case.type, case.state.value, case.priority.value, case.verify.value,
            case.origin.value, case.created_by, case.created_time_ms, case.updated_time_ms, case.description,
            case.department, case.assignee, case.category, case.place, case.grid, case.district, case.lat,
            case.lon, case.photo_url, case.closed_time_ms,
            case.resolution.value if case.resolution is not None else None,
            case.suspended_from.value if case.suspended_from is not None else None, case.returned_by,
            case.open_violations, case.deadline_ms, case.warning_ms, case.warning_signalled_ms,
            case.breach_signalled_ms, case.escalated_to, case.reworked, case.returns, case.suspended_ms,
            case.suspended_since_ms)


_STATES: Final = {state.value: state for state in CaseState}
_PRIORITIES: Final = {priority.value: priority for priority in CasePriority}
_VERIFICATIONS: Final = {verify.value: verify for verify in Verification}
_ORIGINS: Final = {origin.value: origin for origin in CaseOrigin}
_RESOLUTIONS: Final = {resolution.value: resolution for resolution in Resolution}


def _case_from_row(row: tuple[Any, ...]) -> Case:
    """The case of a row, its enums looked up by value; built like model.replaced builds a copy (the
    dataclass constructor's checks cost more than the rest when the intake reads hundreds of cases a
    second). A value the enums do not know raises ValueError, as the constructor would."""
    data = dict(zip(_CASE_COLUMNS, row, strict=True))
    try:
        data["state"] = _STATES[data["state"]]
        data["priority"] = _PRIORITIES[data["priority"]]
        data["verify"] = _VERIFICATIONS[data["verify"]]
        data["origin"] = _ORIGINS[data["origin"]]
        if data["resolution"] is not None:
            data["resolution"] = _RESOLUTIONS[data["resolution"]]
        if data["suspended_from"] is not None:
            data["suspended_from"] = _STATES[data["suspended_from"]]
    except KeyError as exc:
        raise ValueError(f"case {row[0]!r} has an unknown value {exc.args[0]!r}") from None
    case = object.__new__(Case)
    case.__dict__.update(data)
    return case


def _entry_from_row(row: tuple[Any, ...]) -> HistoryEntry:
    seq, time_ms, actor, from_state, to_state, note, assignee, department, photo_url, reason = row
    return HistoryEntry(seq=seq, time_ms=time_ms, actor=actor,
                        from_state=CaseState(from_state) if from_state is not None else None,
                        to_state=CaseState(to_state), note=note, assignee=assignee, department=department,
                        photo_url=photo_url, reason=reason)
