"""Requests filed through Open311 GeoReport v2 (docs/cases.md): which service each case was filed under,
where, with what answers, and, apart, how to reach the citizen who filed it.

The tables live in the cases' database (`cases.sqlite3`, or the PostgreSQL database of every api replica)
so that a request is read joined with its case: its status is the case's. The reporter's contact details
(email, phone, names, device and account ids) sit in a table of their own that no API reads: they are kept
for the department to call the citizen back, and can be erased on their own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from processors.cases.model import CaseState, Resolution
from store.cases import CaseStore
from store.relational import Database, Executor, Schema

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS open311_requests (
    case_id            TEXT PRIMARY KEY,
    service_code       TEXT NOT NULL,
    requested_time_ms  {int} NOT NULL,
    address            TEXT,
    address_id         TEXT,
    media_url          TEXT,
    attributes         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS open311_requests_by_time ON open311_requests (requested_time_ms, case_id);
CREATE TABLE IF NOT EXISTS open311_reporters (
    case_id     TEXT PRIMARY KEY,
    email       TEXT,
    phone       TEXT,
    first_name  TEXT,
    last_name   TEXT,
    device_id   TEXT,
    account_id  TEXT
);
"""
log = logging.getLogger(__name__)

SCHEMA: Final = Schema("open311", _TABLES.format(int="INTEGER"), _TABLES.format(int="BIGINT"))
# GeoReport v2 "Response Volume": at most 1000 requests per answer.
MAX_REQUESTS: Final = 1000


@dataclass(frozen=True)
class FiledRequest:
    """What the request adds to its case."""

    case_id: str
    service_code: str
    requested_time_ms: int
    address: str | None = None
    address_id: str | None = None
    media_url: str | None = None
    # attribute code -> the answer (a list for a multivaluelist)
    attributes: Mapping[str, str | list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Reporter:
    """How to reach the citizen; never answered by the API."""

    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    device_id: str | None = None
    account_id: str | None = None

    def is_empty(self) -> bool:
        return not any((self.email, self.phone, self.first_name, self.last_name, self.device_id,
                        self.account_id))


@dataclass(frozen=True)
class ServiceRequest:
    """A filed request with what its case says now."""

    request: FiledRequest
    state: CaseState
    resolution: Resolution | None
    department: str | None
    description: str
    lat: float | None
    lon: float | None
    updated_time_ms: int


@dataclass(frozen=True)
class RequestQuery:
    """GeoReport v2 "GET Service Requests": `case_ids` overrides every other filter."""

    case_ids: Sequence[str] = ()
    service_codes: Sequence[str] = ()
    # Requested in [from_ms, to_ms].
    from_ms: int | None = None
    to_ms: int | None = None
    # None: any; True: open (any state but closed); False: closed.
    open: bool | None = None
    limit: int = MAX_REQUESTS


_SELECT: Final = (
    "SELECT r.case_id, r.service_code, r.requested_time_ms, r.address, r.address_id, r.media_url, "
    "r.attributes, c.state, c.resolution, c.department, c.description, c.lat, c.lon, c.updated_time_ms "
    "FROM open311_requests r JOIN cases c ON c.case_id = r.case_id")


class Open311Store:
    """Reads and erases through the case store's own database (its connection or pool, which the case
    store closes): filing writes in the case's transaction anyway, and after an outage one pool
    reconnecting means filing and reading come back together."""

    def __init__(self, database: Database, reporter_retention_days: int | None = None) -> None:
        self._db = database
        # None: reporters' contact details are kept.
        self.reporter_retention_days = reporter_retention_days

    @classmethod
    def beside(cls, cases: CaseStore, reporter_retention_days: int | None = None) -> Open311Store:
        """In the cases' database, with the request tables created there if missing."""
        cases.database.create_tables(SCHEMA)
        return cls(cases.database, reporter_retention_days)

    def apply_retention(self, now_ms: int) -> int:
        """Erase the contact details of the reporters whose case closed `reporter_retention_days` or more
        before `now_ms`; how many were erased. A case reopened before then keeps them (it is not closed)."""
        if self.reporter_retention_days is None:
            return 0
        closed_before_ms = now_ms - self.reporter_retention_days * 86_400_000
        erased = self._db.execute(
            "DELETE FROM open311_reporters WHERE case_id IN "
            "(SELECT case_id FROM cases WHERE state = 'closed' AND closed_time_ms <= ?)",
            (closed_before_ms,)).rowcount
        if erased:
            log.info("open311: the contact details of %d reporters were erased, %d days after their cases "
                     "closed", erased, self.reporter_retention_days)
        return erased

    @staticmethod
    def add_in(tx: Executor, request: FiledRequest, reporter: Reporter) -> None:
        """The request's records in a transaction of the cases' database: the one that makes its case
        (CaseService.create's `along`), so that a request is never stored without its case or a case
        filed through Open311 without its request."""
        tx.execute("INSERT INTO open311_requests (case_id, service_code, requested_time_ms, address, "
                   "address_id, media_url, attributes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (request.case_id, request.service_code, request.requested_time_ms, request.address,
                    request.address_id, request.media_url,
                    json.dumps(dict(request.attributes), ensure_ascii=False)))
        if not reporter.is_empty():
            tx.execute("INSERT INTO open311_reporters (case_id, email, phone, first_name, last_name, "
                       "device_id, account_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (request.case_id, reporter.email, reporter.phone, reporter.first_name,
                        reporter.last_name, reporter.device_id, reporter.account_id))

    def reporter(self, case_id: str) -> Reporter | None:
        row = self._db.execute("SELECT email, phone, first_name, last_name, device_id, account_id "
                               "FROM open311_reporters WHERE case_id = ?", (case_id,)).one()
        return Reporter(*row) if row is not None else None

    def get(self, case_id: str) -> ServiceRequest | None:
        row = self._db.execute(f"{_SELECT} WHERE r.case_id = ?", (case_id,)).one()
        return _from_row(row) if row is not None else None

    def query(self, query: RequestQuery) -> list[ServiceRequest]:
        """Newest first, at most `limit`."""
        where: list[str] = []
        params: list[Any] = []
        if query.case_ids:
            where.append(f"r.case_id IN ({', '.join('?' for _ in query.case_ids)})")
            params.extend(query.case_ids)
        else:
            if query.service_codes:
                where.append(f"r.service_code IN ({', '.join('?' for _ in query.service_codes)})")
                params.extend(query.service_codes)
            if query.from_ms is not None:
                where.append("r.requested_time_ms >= ?")
                params.append(query.from_ms)
            if query.to_ms is not None:
                where.append("r.requested_time_ms <= ?")
                params.append(query.to_ms)
            if query.open is not None:
                where.append("c.state <> ?" if query.open else "c.state = ?")
                params.append(CaseState.CLOSED.value)
        sql = _SELECT + (f" WHERE {' AND '.join(where)}" if where else "")
        rows = self._db.execute(f"{sql} ORDER BY r.requested_time_ms DESC, r.case_id DESC LIMIT ?",
                                (*params, query.limit)).rows
        return [_from_row(row) for row in rows]


def _from_row(row: Sequence[Any]) -> ServiceRequest:
    (case_id, service_code, requested_ms, address, address_id, media_url, attributes, state, resolution,
     department, description, lat, lon, updated_ms) = row
    return ServiceRequest(
        request=FiledRequest(case_id=case_id, service_code=service_code, requested_time_ms=requested_ms,
                             address=address, address_id=address_id, media_url=media_url,
                             attributes=json.loads(attributes)),
        state=CaseState(state), resolution=Resolution(resolution) if resolution is not None else None,
        department=department, description=description, lat=lat, lon=lon, updated_time_ms=updated_ms)
