"""Webhook subscriptions and their deliveries, in SQLite under the data directory (`webhooks.sqlite3`).

A delivery row is written (pending) before its first attempt and updated after each one, so the
delivery log, the dead letters and pending work all survive a restart: pending rows are queued again
at start (at least once). (subscription, idempotency key) is unique: a replayed change is not queued
twice for the same subscription.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from api.alerts.filters import ViolationFilter

FILE_NAME: Final = "webhooks.sqlite3"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS subscriptions (
    subscription_id      TEXT PRIMARY KEY,
    url                  TEXT NOT NULL,
    filter               TEXT NOT NULL,
    secret               TEXT NOT NULL,
    description          TEXT NOT NULL,
    owner_key_id         TEXT NOT NULL,
    plates               INTEGER NOT NULL,
    enabled              INTEGER NOT NULL,
    disabled_reason      TEXT,
    created_time_ms      INTEGER NOT NULL,
    previous_secret      TEXT,
    previous_secret_expires_time_ms INTEGER
);
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id      TEXT NOT NULL,
    idempotency_key      TEXT NOT NULL,
    change_id            TEXT NOT NULL,
    body                 BLOB NOT NULL,
    status               TEXT NOT NULL,
    attempts             INTEGER NOT NULL DEFAULT 0,
    last_status_code     INTEGER,
    last_error           TEXT,
    created_time_ms      INTEGER NOT NULL,
    updated_time_ms      INTEGER NOT NULL,
    last_duration_ms     INTEGER,
    UNIQUE (subscription_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS deliveries_by_status ON deliveries (subscription_id, status, delivery_id);
"""
# Columns added after the first release: (table, column, declaration), added to older files at open.
_ADDED_COLUMNS: Final = (
    ("subscriptions", "previous_secret", "TEXT"),
    ("subscriptions", "previous_secret_expires_time_ms", "INTEGER"),
    ("deliveries", "last_duration_ms", "INTEGER"),
)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    url: str
    filter: ViolationFilter
    secret: str
    description: str
    owner_key_id: str
    # Whether the owner's key held the plates scope: deliveries carry unmasked plates only then.
    plates: bool
    enabled: bool
    disabled_reason: str | None
    created_time_ms: int
    # After a secret rotation: the secret that deliveries are also signed with until the time given.
    previous_secret: str | None = None
    previous_secret_expires_time_ms: int | None = None

    def signing_secrets(self, now_ms: int) -> list[str]:
        """The current secret first, then the previous one while its grace period lasts."""
        expires = self.previous_secret_expires_time_ms
        if self.previous_secret and expires is not None and now_ms < expires:
            return [self.secret, self.previous_secret]
        return [self.secret]


@dataclass(frozen=True)
class Delivery:
    delivery_id: int
    subscription_id: str
    idempotency_key: str
    change_id: str
    body: bytes
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_time_ms: int
    updated_time_ms: int
    # How long the last attempt took, from sending the request to the answer (or the failure).
    last_duration_ms: int | None = None


@dataclass(frozen=True)
class NewDelivery:
    subscription_id: str
    idempotency_key: str
    change_id: str
    body: bytes


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_signing_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


_SUBSCRIPTION_COLUMNS = ("subscription_id, url, filter, secret, description, owner_key_id, plates, enabled, "
                         "disabled_reason, created_time_ms, previous_secret, previous_secret_expires_time_ms")
_DELIVERY_COLUMNS = ("delivery_id, subscription_id, idempotency_key, change_id, body, status, attempts, "
                     "last_status_code, last_error, created_time_ms, updated_time_ms, last_duration_ms")


class WebhookStore:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._lock = threading.Lock()

    @classmethod
    def in_directory(cls, data_dir: Path) -> WebhookStore:
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / FILE_NAME
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        path.chmod(0o600)  # it holds the signing secrets
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(_SCHEMA)
        added = []
        for table, column, declaration in _ADDED_COLUMNS:
            existing = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
            if column not in existing:
                connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
                added.append(column)
        if "last_duration_ms" in added:
            _drop_answer_bodies(connection)
        return cls(connection)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, params)

    # Subscriptions

    def create_subscription(self, *, url: str, filter: ViolationFilter, secret: str | None, description: str,
                            owner_key_id: str, plates: bool) -> Subscription:
        subscription = Subscription(
            subscription_id=secrets.token_hex(8), url=url, filter=filter,
            secret=secret or new_signing_secret(), description=description,
            owner_key_id=owner_key_id, plates=plates, enabled=True, disabled_reason=None,
            created_time_ms=now_ms())
        self._execute(
            f"INSERT INTO subscriptions ({_SUBSCRIPTION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (subscription.subscription_id, url, filter.model_dump_json(), subscription.secret, description,
             owner_key_id, int(plates), 1, None, subscription.created_time_ms, None, None))
        return subscription

    def subscriptions(self, owner_key_id: str | None = None) -> list[Subscription]:
        where, params = ("WHERE owner_key_id = ?", (owner_key_id,)) if owner_key_id else ("", ())
        rows = self._execute(f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions {where} "
                             "ORDER BY created_time_ms", params).fetchall()
        return [_subscription(row) for row in rows]

    def subscription(self, subscription_id: str) -> Subscription | None:
        row = self._execute(f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE subscription_id = ?",
                            (subscription_id,)).fetchone()
        return None if row is None else _subscription(row)

    def update_subscription(self, subscription_id: str, *, url: str | None = None,
                            filter: ViolationFilter | None = None, enabled: bool | None = None,
                            disabled_reason: str | None = None) -> Subscription | None:
        sets: list[str] = []
        params: list[Any] = []
        if url is not None:
            sets.append("url = ?")
            params.append(url)
        if filter is not None:
            sets.append("filter = ?")
            params.append(filter.model_dump_json())
        if enabled is not None:
            sets += ["enabled = ?", "disabled_reason = ?"]
            params += [int(enabled), None if enabled else disabled_reason]
        if sets:
            self._execute(f"UPDATE subscriptions SET {', '.join(sets)} WHERE subscription_id = ?",
                          (*params, subscription_id))
        return self.subscription(subscription_id)

    def rotate_secret(self, subscription_id: str, *, secret: str | None,
                      grace_ms: int) -> Subscription | None:
        """A new signing secret; the old one keeps signing deliveries (as a second signature) for
        `grace_ms`, so receivers can switch without dropping deliveries."""
        new_secret = secret or new_signing_secret()
        expires = now_ms() + grace_ms if grace_ms > 0 else None
        self._execute(
            "UPDATE subscriptions SET previous_secret = CASE WHEN ? IS NULL THEN NULL ELSE secret END, "
            "previous_secret_expires_time_ms = ?, secret = ? WHERE subscription_id = ?",
            (expires, expires, new_secret, subscription_id))
        return self.subscription(subscription_id)

    def delete_subscription(self, subscription_id: str) -> bool:
        with self._lock:
            deleted = self._db.execute("DELETE FROM subscriptions WHERE subscription_id = ?",
                                       (subscription_id,)).rowcount
            self._db.execute("DELETE FROM deliveries WHERE subscription_id = ?", (subscription_id,))
        return bool(deleted)

    # Deliveries

    def add_deliveries(self, new: Sequence[NewDelivery]) -> list[Delivery]:
        """Insert pending deliveries; returns those that were new (a replayed change is skipped)."""
        created: list[Delivery] = []
        now = now_ms()
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for item in new:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO deliveries (subscription_id, idempotency_key, change_id, "
                        "body, status, created_time_ms, updated_time_ms) VALUES (?,?,?,?,?,?,?)",
                        (item.subscription_id, item.idempotency_key, item.change_id, item.body,
                         DeliveryStatus.PENDING.value, now, now))
                    if cursor.rowcount and cursor.lastrowid is not None:
                        created.append(Delivery(cursor.lastrowid, item.subscription_id, item.idempotency_key,
                                                item.change_id, item.body, DeliveryStatus.PENDING, 0, None,
                                                None, now, now))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return created

    def record_attempt(self, delivery_id: int, *, status: DeliveryStatus, attempts: int,
                       status_code: int | None, error: str | None, duration_ms: int | None = None) -> None:
        self._execute(
            "UPDATE deliveries SET status = ?, attempts = ?, last_status_code = ?, last_error = ?, "
            "updated_time_ms = ?, last_duration_ms = COALESCE(?, last_duration_ms) WHERE delivery_id = ?",
            (status.value, attempts, status_code, error, now_ms(), duration_ms, delivery_id))

    def deliveries(self, subscription_id: str, *, status: DeliveryStatus | None = None,
                   before_id: int | None = None, limit: int = 100) -> list[Delivery]:
        """Newest first; page with `before_id` = the last delivery id of the previous page."""
        clauses, params = ["subscription_id = ?"], [subscription_id]
        if status is not None:
            clauses.append("status = ?")
            params.append(status.value)
        if before_id is not None:
            clauses.append("delivery_id < ?")
            params.append(str(before_id))
        rows = self._execute(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE {' AND '.join(clauses)} "
                             "ORDER BY delivery_id DESC LIMIT ?", (*params, limit)).fetchall()
        return [_delivery(row) for row in rows]

    def delivery(self, delivery_id: int) -> Delivery | None:
        row = self._execute(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE delivery_id = ?",
                            (delivery_id,)).fetchone()
        return None if row is None else _delivery(row)

    def pending(self) -> list[Delivery]:
        rows = self._execute(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE status = ? "
                             "ORDER BY delivery_id", (DeliveryStatus.PENDING.value,)).fetchall()
        return [_delivery(row) for row in rows]

    def count(self, status: DeliveryStatus) -> int:
        row = self._execute("SELECT COUNT(*) FROM deliveries WHERE status = ?", (status.value,)).fetchone()
        return int(row[0])

    def requeue(self, delivery_id: int) -> Delivery | None:
        """A dead delivery back to pending with a fresh attempt count (manual redelivery)."""
        self._execute("UPDATE deliveries SET status = ?, attempts = 0, updated_time_ms = ? "
                      "WHERE delivery_id = ? AND status = ?",
                      (DeliveryStatus.PENDING.value, now_ms(), delivery_id, DeliveryStatus.DEAD.value))
        return self.delivery(delivery_id)

    def prune(self, subscription_id: str, keep: int) -> int:
        """Drop delivered rows beyond the newest `keep` (the delivery log is bounded; dead ones stay)."""
        return self._execute(
            "DELETE FROM deliveries WHERE subscription_id = ? AND status = ? AND delivery_id < COALESCE(("
            "SELECT delivery_id FROM deliveries WHERE subscription_id = ? AND status = ? "
            "ORDER BY delivery_id DESC LIMIT 1 OFFSET ?), 0)",
            (subscription_id, DeliveryStatus.DELIVERED.value, subscription_id,
             DeliveryStatus.DELIVERED.value, keep - 1)).rowcount


def _subscription(row: tuple[Any, ...]) -> Subscription:
    (subscription_id, url, filter_json, secret, description, owner, plates, enabled, reason, created,
     previous_secret, previous_expires) = row
    return Subscription(subscription_id=subscription_id, url=url,
                        filter=ViolationFilter.model_validate_json(filter_json), secret=secret,
                        description=description, owner_key_id=owner, plates=bool(plates),
                        enabled=bool(enabled), disabled_reason=reason, created_time_ms=created,
                        previous_secret=previous_secret, previous_secret_expires_time_ms=previous_expires)


def _delivery(row: tuple[Any, ...]) -> Delivery:
    (delivery_id, subscription_id, key, change_id, body, status, attempts, code, error, created,
     updated, duration_ms) = row
    return Delivery(delivery_id, subscription_id, key, change_id, bytes(body), DeliveryStatus(status),
                    attempts, code, error, created, updated, duration_ms)


_ANSWER_BODY = re.compile(r"HTTP (\d{3}): .*", re.DOTALL)


def _drop_answer_bodies(connection: sqlite3.Connection) -> None:
    """Once, when a store from before the answer bodies were dropped is opened: errors used to carry the
    first 200 bytes of a receiver's answer (`HTTP 503: <body>`), which the subscriber could read in the
    delivery log; keep the status only."""
    for table, key, column in (("deliveries", "delivery_id", "last_error"),
                               ("subscriptions", "subscription_id", "disabled_reason")):
        rows = connection.execute(f"SELECT {key}, {column} FROM {table} WHERE {column} LIKE '%HTTP %: %'")
        for row_id, text in rows.fetchall():
            connection.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?",
                               (_ANSWER_BODY.sub(r"HTTP \1", text), row_id))
