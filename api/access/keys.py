"""API keys: random tokens shown once, stored only as their SHA-256, each with a set of scopes.

A token is `cw_<key id>_<43 url-safe characters>` (32 random bytes). SHA-256 is enough here (no slow
password hash): the tokens carry 256 bits of entropy, so a stolen hash cannot be brute-forced, and a
fast hash keeps authentication off the request's critical path. Keys are cached in memory after the
first lookup for CACHE_TTL_S; revoking one through the API drops it from the cache at once, through
the CLI (another process) within CACHE_TTL_S.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

FILE_NAME: Final = "access.sqlite3"
CACHE_TTL_S: Final = 10.0


class Scope(StrEnum):
    VIOLATIONS_READ = "violations:read"
    READINGS_READ = "readings:read"
    DEVICES_MANAGE = "devices:manage"
    SUBSCRIPTIONS_MANAGE = "subscriptions:manage"
    # Unmasked licence plates and snapshot or clip links in violations, streams and webhooks.
    PLATES = "plates"
    METRICS_READ = "metrics:read"
    # Every scope above, plus keys, the audit log and dead letters.
    ADMIN = "admin"


class LastAdminKey(Exception):
    """Revoking this key would leave no active admin key."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[Scope]
    created_time_ms: int
    revoked: bool = False

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id          TEXT PRIMARY KEY,
    token_sha256    TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    created_time_ms INTEGER NOT NULL,
    revoked         INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms    INTEGER NOT NULL,
    key_id     TEXT NOT NULL,
    action     TEXT NOT NULL,
    what       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_key ON audit_log (key_id, id);
"""


def open_access_db(data_dir: Path) -> sqlite3.Connection:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / FILE_NAME
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    path.chmod(0o600)  # key hashes and the audit trail: readable by the service user only
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.executescript(_SCHEMA)
    return connection


class KeyStore:
    def __init__(self, connection: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db = connection
        self._lock = lock
        self._cache: dict[str, tuple[ApiKey, float]] = {}

    def create(self, name: str, scopes: frozenset[Scope]) -> tuple[ApiKey, str]:
        """A new key and its token; the token is never stored and cannot be shown again."""
        key_id = secrets.token_hex(4)
        token = f"cw_{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey(key_id=key_id, name=name, scopes=scopes, created_time_ms=time.time_ns() // 1_000_000)
        with self._lock:
            self._db.execute(
                "INSERT INTO api_keys (key_id, token_sha256, name, scopes, created_time_ms) "
                "VALUES (?,?,?,?,?)",
                (key_id, hash_token(token), name, " ".join(sorted(scopes)), key.created_time_ms),
            )
        return key, token

    def verify(self, token: str) -> ApiKey | None:
        digest = hash_token(token)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached[1] < CACHE_TTL_S:
            return cached[0]
        with self._lock:
            row = self._db.execute(
                "SELECT key_id, name, scopes, created_time_ms FROM api_keys "
                "WHERE token_sha256 = ? AND revoked = 0", (digest,)
            ).fetchone()
        if row is None:
            self._cache.pop(digest, None)
            return None
        key = _key_from_row((*row, 0))
        self._cache[digest] = (key, now)
        return key

    def list(self) -> list[ApiKey]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key_id, name, scopes, created_time_ms, revoked FROM api_keys ORDER BY created_time_ms"
            ).fetchall()
        return [_key_from_row(row) for row in rows]

    def revoke(self, key_id: str, *, keep_an_admin: bool = False) -> bool:
        """False when there is no such active key. With `keep_an_admin` (the API), revoking the last
        active admin key raises LastAdminKey: nobody could manage keys through the API after it. The CLI
        may, since whoever runs it can create a new admin key."""
        with self._lock:
            if keep_an_admin:
                admins = [key_id_ for key_id_, scopes in self._db.execute(
                    "SELECT key_id, scopes FROM api_keys WHERE revoked = 0").fetchall()
                    if Scope.ADMIN.value in scopes.split()]
                if admins == [key_id]:
                    raise LastAdminKey(f"key {key_id} is the last active admin key; create another "
                                       "admin key before revoking it")
            changed = self._db.execute(
                "UPDATE api_keys SET revoked = 1 WHERE key_id = ? AND revoked = 0", (key_id,)
            ).rowcount
        self._cache = {digest: entry for digest, entry in self._cache.items() if entry[0].key_id != key_id}
        return bool(changed)


def _key_from_row(row: tuple[str, str, str, int, int]) -> ApiKey:
    key_id, name, scopes, created_time_ms, revoked = row
    return ApiKey(key_id=key_id, name=name, scopes=frozenset(Scope(s) for s in scopes.split()),
                  created_time_ms=created_time_ms, revoked=bool(revoked))
