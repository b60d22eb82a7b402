"""What people did about a violation: acknowledged it, assigned it, dismissed it as false, added a note.

The rule's own changes (opened, updated, cleared) are kept by the time-series store with the violation
(`Store.violation_history`); people's actions are kept here, in the relational database
(store/relational.py: `violation_actions.sqlite3` under the data directory, or the PostgreSQL server every
api replica shares), each with its wall time, the API key that took it and its note. An action is checked
against the ones before it and recorded in one exclusive transaction, so two replicas cannot both
acknowledge the same violation. The rules of what may follow what are in `refusal` (docs/api.md).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from core.models import LifecycleChange, LifecycleEntry
from core.settings import RelationalSettings
from store.relational import Database, Schema, SqliteDatabase, open_database

FILE_NAME: Final = "violation_actions.sqlite3"


class Action(StrEnum):
    """What a person can do to a violation through the API."""

    ACKNOWLEDGE = "acknowledge"
    ASSIGN = "assign"
    DISMISS = "dismiss"
    NOTE = "note"


CHANGE_OF: Final = {
    Action.ACKNOWLEDGE: LifecycleChange.ACKNOWLEDGED,
    Action.ASSIGN: LifecycleChange.ASSIGNED,
    Action.DISMISS: LifecycleChange.DISMISSED,
    Action.NOTE: LifecycleChange.NOTED,
}


class Refusal(StrEnum):
    """Why an action was refused: the violation's state does not allow it."""

    ALREADY_ACKNOWLEDGED = "already_acknowledged"
    ALREADY_ASSIGNED = "already_assigned"  # to the same assignee
    DISMISSED = "dismissed"  # a dismissed violation only takes notes


class ActionRefused(Exception):
    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Handling:
    """A violation's state as people left it, folded from its actions (all None: nobody acted yet)."""

    acknowledged_time_ms: int | None = None
    acknowledged_by: str | None = None
    assignee: str | None = None
    assigned_time_ms: int | None = None
    dismissed_time_ms: int | None = None
    dismissed_by: str | None = None
    dismissed_reason: str | None = None
    notes: int = 0

    def then(self, entry: LifecycleEntry) -> Handling:
        """The state after `entry` (one of people's actions)."""
        change = entry.change
        if change is LifecycleChange.ACKNOWLEDGED:
            return replace(self, acknowledged_time_ms=entry.time_ms, acknowledged_by=entry.actor)
        if change is LifecycleChange.ASSIGNED:
            return replace(self, assignee=entry.assignee, assigned_time_ms=entry.time_ms)
        if change is LifecycleChange.DISMISSED:
            return replace(self, dismissed_time_ms=entry.time_ms, dismissed_by=entry.actor,
                            dismissed_reason=entry.note)
        if change is LifecycleChange.NOTED:
            return replace(self, notes=self.notes + 1)
        return self


def handling_of(entries: Sequence[LifecycleEntry]) -> Handling:
    handling = Handling()
    for entry in entries:
        handling = handling.then(entry)
    return handling


def refusal(handling: Handling, violation_id: str, action: Action,
            assignee: str | None) -> ActionRefused | None:
    """Whether `action` may follow what people did so far. A dismissed violation (a false alarm) is
    settled: it takes notes only. Acknowledging is once; assigning again to someone else reassigns, to
    the same assignee is refused. Whether the rule has cleared it does not matter: a cleared violation can
    still be acknowledged, assigned for follow-up or dismissed as false."""
    if handling.dismissed_time_ms is not None and action is not Action.NOTE:
        return ActionRefused(Refusal.DISMISSED, f"violation {violation_id} was dismissed as false by "
                                                f"{handling.dismissed_by}; only notes can be added")
    if action is Action.ACKNOWLEDGE and handling.acknowledged_time_ms is not None:
        return ActionRefused(Refusal.ALREADY_ACKNOWLEDGED, f"violation {violation_id} was already "
                                                           f"acknowledged by {handling.acknowledged_by}")
    if action is Action.ASSIGN and assignee == handling.assignee:
        return ActionRefused(Refusal.ALREADY_ASSIGNED,
                             f"violation {violation_id} is already assigned to {assignee}")
    return None


_COLUMNS: Final = "violation_id, change, time_ms, actor, actor_name, note, assignee"
_SQLITE_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS violation_actions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    violation_id TEXT    NOT NULL,
    change       TEXT    NOT NULL,
    time_ms      INTEGER NOT NULL,
    actor        TEXT    NOT NULL,
    actor_name   TEXT,
    note         TEXT,
    assignee     TEXT
);
CREATE INDEX IF NOT EXISTS violation_actions_by_violation ON violation_actions (violation_id, id);
"""
_POSTGRES_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS violation_actions (
    id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    violation_id TEXT   NOT NULL,
    change       TEXT   NOT NULL,
    time_ms      BIGINT NOT NULL,
    actor        TEXT   NOT NULL,
    actor_name   TEXT,
    note         TEXT,
    assignee     TEXT
);
CREATE INDEX IF NOT EXISTS violation_actions_by_violation ON violation_actions (violation_id, id);
"""
SCHEMA: Final = Schema("violation_actions", _SQLITE_SCHEMA, _POSTGRES_SCHEMA)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ViolationActions:
    def __init__(self, database: Database, *, clock: Callable[[], int] = now_ms) -> None:
        self._db = database
        self._clock = clock

    @classmethod
    def open(cls, settings: RelationalSettings, data_dir: Path) -> ViolationActions:
        """Where the settings say: `data_dir/violation_actions.sqlite3`, or the PostgreSQL server."""
        return cls(open_database(settings, data_dir, FILE_NAME, SCHEMA))

    @classmethod
    def in_memory(cls) -> ViolationActions:
        """For API instances built in-process by tests and tools: kept only while the process runs."""
        connection = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        connection.executescript(_SQLITE_SCHEMA)
        return cls(SqliteDatabase(connection))

    def record(self, violation_id: str, action: Action, *, actor: str, actor_name: str | None = None,
               note: str | None = None, assignee: str | None = None) -> LifecycleEntry:
        """The action, recorded at the wall time now; ActionRefused when the violation's state does not
        allow it (`refusal`). Checked and written in one exclusive transaction per violation."""
        with self._db.transaction(exclusive=f"violation_actions:{violation_id}") as tx:
            rows = tx.execute(f"SELECT {_COLUMNS} FROM violation_actions WHERE violation_id = ? ORDER BY id",
                              (violation_id,)).rows
            before = [_entry(row) for row in rows]
            refused = refusal(handling_of(before), violation_id, action, assignee)
            if refused is not None:
                raise refused
            # Never before the previous action (a replica's clock a little behind): the order is kept.
            time_ms = max([self._clock(), *(entry.time_ms for entry in before)])
            entry = LifecycleEntry(violation_id=violation_id, change=CHANGE_OF[action], time_ms=time_ms,
                                   actor=actor, actor_name=actor_name, note=note, assignee=assignee)
            tx.execute(f"INSERT INTO violation_actions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (entry.violation_id, entry.change.value, entry.time_ms, entry.actor, entry.actor_name,
                        entry.note, entry.assignee))
        return entry

    def history(self, violation_id: str) -> list[LifecycleEntry]:
        """People's actions on the violation, in the order they were taken."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM violation_actions WHERE violation_id = ? ORDER BY id", (violation_id,)
        ).rows
        return [_entry(row) for row in rows]

    def handling(self, violation_ids: Sequence[str]) -> dict[str, Handling]:
        """The state people left each violation in (one query for a page); untouched ones are left out."""
        if not violation_ids:
            return {}
        marks = ", ".join("?" * len(violation_ids))
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM violation_actions WHERE violation_id IN ({marks}) ORDER BY id",
            tuple(violation_ids),
        ).rows
        entries: dict[str, list[LifecycleEntry]] = {}
        for row in rows:
            entries.setdefault(row[0], []).append(_entry(row))
        return {violation_id: handling_of(taken) for violation_id, taken in entries.items()}

    def close(self) -> None:
        self._db.close()


def _entry(row: tuple[Any, ...]) -> LifecycleEntry:
    violation_id, change, time_ms, actor, actor_name, note, assignee = row
    return LifecycleEntry(violation_id=violation_id, change=LifecycleChange(change), time_ms=int(time_ms),
                          actor=actor, actor_name=actor_name, note=note, assignee=assignee)
