"""Dispatch plans and the stops reported done, in the relational database (store/relational.py):
`dispatch.sqlite3` under the data directory, or the PostgreSQL database every api replica shares, so a
plan made through one replica is read, reported on and re-planned through any other, and survives a
restart.

A plan is kept whole (its JSON) with the columns the API filters and orders on. Two things keep
replicas from losing each other's work:

- a stop reported done is a row of its own (`dispatch_stop_reports`, one per plan and bin), written in a
  transaction that checks the stop is in the plan and not done yet; readers see the plan with every
  report applied (planner.with_reports), whether or not a re-plan has taken it in yet;
- a re-plan is stored only over the version it started from (`version`, +1 per write); when another
  replica stored a plan meanwhile, the re-plan starts again from that one (api/routes/dispatch.py).

Making a plan again for the same shift replaces it: a new `generation`, its reports deleted.

Schema version 1 (the first), recorded in `dispatch_schema`; a database written by a newer citywatch is
refused at open rather than misread.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from core.settings import RelationalSettings
from processors.dispatch.model import (
    CapacityUnit,
    Figures,
    Flagged,
    LeftOut,
    LeftReason,
    Place,
    Plan,
    Route,
    ShiftWindow,
    Stop,
    StopReport,
    StopStatus,
)
from processors.dispatch.planner import with_reports
from store.relational import Database, RelationalError, Schema, SqliteDatabase, open_database

FILE_NAME: Final = "dispatch.sqlite3"
SCHEMA_VERSION: Final = 1

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS dispatch_schema (
    name             TEXT PRIMARY KEY,
    version          INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dispatch_plans (
    plan_id          TEXT PRIMARY KEY,
    generation       TEXT NOT NULL,
    version          {int} NOT NULL,
    revision         INTEGER NOT NULL,
    depot_id         TEXT NOT NULL,
    shift_id         TEXT NOT NULL,
    start_ms         {int} NOT NULL,
    end_ms           {int} NOT NULL,
    touched          {int} NOT NULL,
    body             TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dispatch_plans_by_touched ON dispatch_plans (touched);
CREATE TABLE IF NOT EXISTS dispatch_stop_reports (
    plan_id          TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    truck_id         TEXT NOT NULL,
    done_time_ms     {int} NOT NULL,
    actor            TEXT NOT NULL,
    note             TEXT NOT NULL,
    photo_url        TEXT,
    stop             TEXT NOT NULL,
    PRIMARY KEY (plan_id, device_id)
);
"""
SCHEMA: Final = Schema("dispatch", _TABLES.format(int="INTEGER"), _TABLES.format(int="BIGINT"))
# Newest first: `touched` grows with every write of any plan.
_NEXT_TOUCHED: Final = "(SELECT COALESCE(MAX(touched), 0) + 1 FROM dispatch_plans)"
_REPORT_COLUMNS: Final = "plan_id, truck_id, done_time_ms, actor, note, photo_url, stop"


class PlanNotFound(LookupError):
    pass


class StopNotFound(LookupError):
    pass


class StopAlreadyDone(Exception):
    pass


@dataclass(frozen=True)
class StoredPlan:
    """A plan with its reports applied, and what a re-plan of it must find unchanged to store over it."""

    plan: Plan
    version: int
    generation: str
    reports: tuple[StopReport, ...]
    # Whether the plan as stored already shows every report done (a re-plan took them all in).
    holds_reports: bool


class PlanStore:
    def __init__(self, database: Database) -> None:
        self._db = database
        try:
            self._check_version()
        except BaseException:
            database.close()
            raise

    @classmethod
    def open(cls, relational: RelationalSettings, data_dir: Path) -> PlanStore:
        return cls(open_database(relational, data_dir, FILE_NAME, SCHEMA))

    @classmethod
    def in_memory(cls) -> PlanStore:
        """For API instances built in-process (tests, tools): gone with the process."""
        connection = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        connection.executescript(SCHEMA.sqlite)
        return cls(SqliteDatabase(connection, threading.Lock()))

    def _check_version(self) -> None:
        with self._db.transaction(exclusive="dispatch") as tx:
            row = tx.execute("SELECT version FROM dispatch_schema WHERE name = 'dispatch'").one()
            if row is None:
                tx.execute("INSERT INTO dispatch_schema (name, version) VALUES ('dispatch', ?)",
                           (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise RelationalError(f"the dispatch plans are stored in schema version {row[0]}, written by "
                                      f"a newer citywatch; this one reads version {SCHEMA_VERSION}")

    def create(self, plan: Plan, *, keep: int) -> None:
        """Store a newly made plan, replacing the shift's plan and its reports; only the newest `keep`
        plans stay."""
        # The same lock as a stop report on this plan: a report never lands on the plan being replaced.
        with self._db.transaction(exclusive=f"dispatch:{plan.plan_id}") as tx:
            tx.execute(
                "INSERT INTO dispatch_plans (plan_id, generation, version, revision, depot_id, shift_id, "
                f"start_ms, end_ms, touched, body) VALUES (?, ?, 1, ?, ?, ?, ?, ?, {_NEXT_TOUCHED}, ?) "
                "ON CONFLICT (plan_id) DO UPDATE SET generation = excluded.generation, "
                "version = dispatch_plans.version + 1, revision = excluded.revision, "
                "depot_id = excluded.depot_id, shift_id = excluded.shift_id, start_ms = excluded.start_ms, "
                "end_ms = excluded.end_ms, touched = excluded.touched, body = excluded.body",
                (plan.plan_id, secrets.token_hex(8), plan.revision, plan.depot_id, plan.shift.shift_id,
                 plan.shift.start_ms, plan.shift.end_ms, plan_to_json(plan)))
            tx.execute("DELETE FROM dispatch_stop_reports WHERE plan_id = ?", (plan.plan_id,))
            tx.execute("DELETE FROM dispatch_plans WHERE plan_id NOT IN (SELECT plan_id FROM dispatch_plans "
                       "ORDER BY touched DESC LIMIT ?)", (keep,))
            tx.execute("DELETE FROM dispatch_stop_reports WHERE plan_id NOT IN "
                       "(SELECT plan_id FROM dispatch_plans)")

    def replace(self, plan: Plan, stored: StoredPlan) -> bool:
        """Store a re-plan of `stored`; False (nothing stored) when another write came first."""
        result = self._db.execute(
            f"UPDATE dispatch_plans SET version = version + 1, revision = ?, touched = {_NEXT_TOUCHED}, "
            "body = ? WHERE plan_id = ? AND version = ? AND generation = ?",
            (plan.revision, plan_to_json(plan), plan.plan_id, stored.version, stored.generation))
        return result.rowcount == 1

    def get(self, plan_id: str) -> StoredPlan | None:
        row = self._db.execute("SELECT body, version, generation FROM dispatch_plans WHERE plan_id = ?",
                               (plan_id,)).one()
        if row is None:
            return None
        reports = self._reports("WHERE plan_id = ?", (plan_id,)).get(plan_id, ())
        plan = plan_from_json(row[0])
        done = {stop.device_id for route in plan.routes for stop in route.stops
                if stop.status is StopStatus.DONE}
        return StoredPlan(with_reports(plan, reports), row[1], row[2], reports,
                          holds_reports=all(report.device_id in done for report in reports))

    def record_done(self, plan_id: str, device_id: str, *, done_time_ms: int, actor: str, note: str = "",
                    photo_url: str | None = None) -> StopReport:
        """The stop at `device_id` reported done: PlanNotFound, StopNotFound (no stop there) or
        StopAlreadyDone; checked and written in one transaction, so two replicas never both report it."""
        with self._db.transaction(exclusive=f"dispatch:{plan_id}") as tx:
            row = tx.execute("SELECT body FROM dispatch_plans WHERE plan_id = ?", (plan_id,)).one()
            if row is None:
                raise PlanNotFound(plan_id)
            reports = [_report_of(r) for r in tx.execute(
                f"SELECT {_REPORT_COLUMNS} FROM dispatch_stop_reports WHERE plan_id = ?", (plan_id,)).rows]
            plan = with_reports(plan_from_json(row[0]), reports)
            found = [(route.truck_id, stop) for route in plan.routes for stop in route.stops
                     if stop.device_id == device_id]
            if not found:
                raise StopNotFound(device_id)
            truck_id, stop = found[0]
            if stop.status is StopStatus.DONE:
                raise StopAlreadyDone(device_id)
            report = StopReport(plan_id=plan_id, truck_id=truck_id, stop=stop, done_time_ms=done_time_ms,
                                actor=actor, note=note, photo_url=photo_url)
            tx.execute(f"INSERT INTO dispatch_stop_reports (device_id, {_REPORT_COLUMNS}) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (device_id, plan_id, truck_id, done_time_ms, actor, note, photo_url,
                        json.dumps(_stop_data(stop))))
        return report

    def plans(self) -> list[Plan]:
        """Newest first, with their reports."""
        return self._plans("ORDER BY touched DESC", ())

    def running(self, now_ms: int) -> list[Plan]:
        """The plans whose shift is under way at `now_ms`."""
        return self._plans("WHERE start_ms <= ? AND ? < end_ms ORDER BY touched DESC", (now_ms, now_ms))

    def _plans(self, clause: str, params: Sequence[Any]) -> list[Plan]:
        rows = self._db.execute(f"SELECT plan_id, body FROM dispatch_plans {clause}", params).rows
        reports = self._reports("", ()) if rows else {}
        return [with_reports(plan_from_json(body), reports.get(plan_id, ())) for plan_id, body in rows]

    def _reports(self, where: str, params: Sequence[Any]) -> dict[str, tuple[StopReport, ...]]:
        found: dict[str, list[StopReport]] = {}
        for row in self._db.execute(f"SELECT {_REPORT_COLUMNS} FROM dispatch_stop_reports {where} "
                                    "ORDER BY done_time_ms", params).rows:
            report = _report_of(row)
            found.setdefault(report.plan_id, []).append(report)
        return {plan_id: tuple(reports) for plan_id, reports in found.items()}

    def close(self) -> None:
        self._db.close()


def _report_of(row: tuple[Any, ...]) -> StopReport:
    plan_id, truck_id, done_time_ms, actor, note, photo_url, stop = row
    return StopReport(plan_id=plan_id, truck_id=truck_id, stop=_stop_of(json.loads(stop)),
                      done_time_ms=done_time_ms, actor=actor, note=note, photo_url=photo_url)


def _stop_data(stop: Stop) -> dict[str, Any]:
    return dataclasses.asdict(stop)


def _stop_of(data: dict[str, Any]) -> Stop:
    return Stop(**{**data, "status": StopStatus(data["status"])})


def plan_to_json(plan: Plan) -> str:
    data = dataclasses.asdict(plan)
    data["mandatory"] = sorted(plan.mandatory)
    return json.dumps(data, separators=(",", ":"))


def plan_from_json(text: str) -> Plan:
    data = json.loads(text)
    return Plan(
        plan_id=data["plan_id"], revision=data["revision"], depot_id=data["depot_id"],
        shift=ShiftWindow(**data["shift"]), capacity_unit=CapacityUnit(data["capacity_unit"]),
        depot=Place(**data["depot"]), transfer_station=Place(**data["transfer_station"]),
        routes=tuple(Route(**{**route, "stops": tuple(_stop_of(stop) for stop in route["stops"])})
                     for route in data["routes"]),
        left_out=tuple(LeftOut(left["device_id"], LeftReason(left["reason"])) for left in data["left_out"]),
        flagged=tuple(Flagged(flag["device_id"], tuple(flag["flags"]), flag["lat"], flag["lon"])
                      for flag in data["flagged"]),
        figures=Figures(**data["figures"]), solver=data["solver"], stopped_by=data["stopped_by"],
        solve_time_s=data["solve_time_s"], planned_time_ms=data["planned_time_ms"],
        mandatory=frozenset(data["mandatory"]))
