"""The relational state's database: an embedded SQLite file, or a PostgreSQL server shared by replicas.

API keys and the audit log (api/access/), webhook subscriptions and deliveries (api/alerts/webhooks/) and
the managed device registry (ingest/device_admin.py) each keep their tables behind a `Database`. Their
queries are written once, with `?` placeholders, in the SQL both backends speak (`ON CONFLICT`,
`RETURNING`), so a store behaves the same on either; only the table definitions differ per backend.
`relational.kind` in the settings picks the backend (`open_database`).

SQLite: one connection per file guarded by a lock, as the stores always did; a file per store under
`store.data_dir`. PostgreSQL: a small connection pool per store (psycopg_pool). A pool rather than one
locked connection because a server connection can break (a restart, a failover, an idle timeout): the
pool drops a broken connection and opens a new one for the next query, where a single connection would
stay dead; it also lets the request threads of the API query in parallel. The tables are created at
first use under a transaction-scoped advisory lock, so replicas starting together do not race on
`CREATE TABLE IF NOT EXISTS` (which is not safe against itself in PostgreSQL).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.settings import PostgresSettings, RelationalKind, RelationalSettings

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)


class RelationalError(RuntimeError):
    """The database could not be reached or set up; the message says where, never with a password."""


class RelationalUnavailable(RelationalError):
    """A query found the server unreachable (down, restarting, failing over); the API answers 503. The
    pool opens a fresh connection for the next query, so nothing needs restarting once it is back."""


@dataclass(frozen=True)
class Result:
    """What a statement gave: its rows (for SELECT and RETURNING) and how many rows it changed."""

    rows: list[tuple[Any, ...]]
    rowcount: int

    def one(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None


class Executor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result: ...

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement for each row of parameters, sent together (PostgreSQL: without waiting for each
        row's answer)."""
        ...


class Database(Executor, Protocol):
    """Statements with `?` placeholders, one at a time or several in one transaction."""

    kind: RelationalKind

    def transaction(self, exclusive: str | None = None) -> AbstractContextManager[Executor]:
        """All or nothing; with `exclusive`, no other transaction naming it runs meanwhile, in any
        process (a read that decides a write, as "is this the last admin key?")."""
        ...

    def create_tables(self, schema: Schema) -> None:
        """Another store's tables in this database, created if missing (Open311's beside the cases')."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Schema:
    """A store's tables per backend; `name` names the store in log lines, its pool and its schema lock."""

    name: str
    sqlite: str
    postgresql: str


class NewerSchema(RuntimeError):
    """A database written by a newer citywatch: opening it could damage what that version keeps."""


def stored_schema_version(tx: Executor, version_table: str, tables: str, understood: int) -> int | None:
    """The schema version recorded in `version_table` (None: new tables), refused with NewerSchema when it
    is newer than `understood`; `tables` names them in the message."""
    row = tx.execute(f"SELECT MAX(version) FROM {version_table}").one()
    version = row[0] if row is not None and row[0] is not None else None
    if version is not None and version > understood:
        raise NewerSchema(f"the {tables} tables are at schema version {version}; this citywatch "
                          f"understands up to {understood}")
    return version


class SqliteDatabase:
    kind = RelationalKind.SQLITE

    def __init__(self, connection: sqlite3.Connection, lock: threading.Lock | None = None) -> None:
        self.connection = connection
        self._lock = lock or threading.Lock()

    @classmethod
    def open(cls, path: Path, schema: str) -> SqliteDatabase:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        path.chmod(0o600)  # key hashes, signing secrets, the audit trail: the service user's only
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(schema)
        return cls(connection)

    def create_tables(self, schema: Schema) -> None:
        with self._lock:
            self.connection.executescript(schema.sqlite)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        with self._lock:
            return _sqlite_result(self.connection.execute(sql, params))

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.transaction() as tx:
            tx.execute_many(sql, rows)

    @contextmanager
    def transaction(self, exclusive: str | None = None) -> Iterator[Executor]:
        # BEGIN IMMEDIATE takes the file's write lock at once: transactions are exclusive anyway.
        with self._lock:
            self.connection.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTransaction(self.connection)
                self.connection.execute("COMMIT")
            except BaseException:
                self.connection.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self.connection.close()


class _SqliteTransaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        return _sqlite_result(self._connection.execute(sql, params))

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._connection.executemany(sql, rows)


def _sqlite_result(cursor: sqlite3.Cursor) -> Result:
    rows = cursor.fetchall()  # before rowcount: with RETURNING, the rows are counted as they are read
    return Result(rows, cursor.rowcount)


def _postgres_sql(sql: str) -> str:
    # The stores' SQL uses `?` (sqlite3's style) and no `%`; psycopg wants `%s`.
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresDatabase:
    kind = RelationalKind.POSTGRESQL

    def __init__(self, pool: ConnectionPool, settings: PostgresSettings) -> None:
        self._pool = pool
        self.settings = settings

    @classmethod
    def open(cls, settings: PostgresSettings, schema: Schema) -> PostgresDatabase:
        """A pool of `settings.pool_size` connections with the store's tables created if missing;
        RelationalError when the server cannot be reached within `connect_timeout_s`."""
        import psycopg
        from psycopg_pool import ConnectionPool, PoolTimeout

        # Keyword arguments, not a DSN string: the password is never part of any text that could be
        # logged or quoted in an error.
        kwargs: dict[str, Any] = {
            "host": settings.host, "port": settings.port, "dbname": settings.database, "user": settings.user,
            "sslmode": settings.sslmode.value, "connect_timeout": max(1, round(settings.connect_timeout_s)),
            "application_name": f"citywatch-{schema.name}", "autocommit": True,
        }
        if settings.password is not None:
            kwargs["password"] = settings.password.get_secret_value()
        if settings.ssl_root_cert is not None:
            kwargs["sslrootcert"] = str(settings.ssl_root_cert)
        pool = ConnectionPool(kwargs=kwargs, min_size=1, max_size=settings.pool_size, open=False,
                              timeout=settings.connect_timeout_s, name=f"citywatch-{schema.name}",
                              check=ConnectionPool.check_connection)
        try:
            pool.open(wait=True, timeout=settings.connect_timeout_s)
        except PoolTimeout:
            pool.close()
            raise RelationalError(f"PostgreSQL at {settings.describe()} could not be reached within "
                                  f"{settings.connect_timeout_s:g} s (relational.postgresql): "
                                  f"{_why_not(kwargs)}") from None
        database = cls(pool, settings)
        try:
            database.create_tables(schema)
        except psycopg.Error as exc:
            pool.close()
            raise RelationalError(f"PostgreSQL at {settings.describe()}: the {schema.name} tables could "
                                  f"not be created: {type(exc).__name__}: {exc}") from None
        log.info("%s tables in PostgreSQL at %s", schema.name, settings.describe())
        return database

    def create_tables(self, schema: Schema) -> None:
        """Under an advisory lock for this store: replicas that start together create the tables once."""
        with self.transaction(exclusive=f"schema:{schema.name}") as tx:
            for statement in schema.postgresql.split(";"):
                if statement.strip():
                    tx.execute(statement)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        with self._unavailable_as_such(), self._pool.connection() as connection:
            cursor = connection.execute(_postgres_sql(sql), params)
            return Result(cursor.fetchall() if cursor.description else [], cursor.rowcount)

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.transaction() as tx:
            tx.execute_many(sql, rows)

    @contextmanager
    def transaction(self, exclusive: str | None = None) -> Iterator[Executor]:
        with self._unavailable_as_such(), self._pool.connection() as connection, connection.transaction():
            transaction = _PostgresTransaction(connection)
            if exclusive is not None:
                transaction.execute("SELECT pg_advisory_xact_lock(?)", (_lock_key(exclusive),))
            yield transaction

    def copy_out(self, sql: str, params: Sequence[Any] = ()) -> bytes:
        """`COPY (sql) TO STDOUT (FORMAT binary)`: a large result as one buffer, for a caller that
        decodes it in bulk (numpy) rather than row by row."""
        with self._unavailable_as_such(), self._pool.connection() as connection, \
                connection.cursor() as cursor:
            chunks: list[bytes] = []
            with cursor.copy(f"COPY ({_postgres_sql(sql)}) TO STDOUT (FORMAT binary)", params) as copy:
                for chunk in copy:
                    chunks.append(bytes(chunk))
            return b"".join(chunks)

    @contextmanager
    def _unavailable_as_such(self) -> Iterator[None]:
        import psycopg

        try:
            yield
        except psycopg.OperationalError as exc:  # also the pool's timeout waiting for a connection
            raise RelationalUnavailable(f"PostgreSQL at {self.settings.describe()} is unavailable: "
                                        f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self._pool.close()


class _PostgresTransaction:
    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        cursor = self._connection.execute(_postgres_sql(sql), params)
        return Result(cursor.fetchall() if cursor.description else [], cursor.rowcount)

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._connection.cursor() as cursor:
                cursor.executemany(_postgres_sql(sql), rows)


def _why_not(kwargs: dict[str, Any]) -> str:
    """What one direct connection attempt says (refused, unknown host, password authentication failed):
    the pool only reports that it timed out. libpq's messages never quote the password."""
    import psycopg

    try:
        psycopg.connect(**kwargs).close()
    except psycopg.Error as exc:
        return " ".join(str(exc).split())
    return "it answered only after the timeout"


def _lock_key(name: str) -> int:
    """A stable 32-bit advisory lock id per name (within PostgreSQL's bigint key space)."""
    return zlib.crc32(f"citywatch:{name}".encode())


def open_database(settings: RelationalSettings, data_dir: Path, file_name: str,
                  schema: Schema) -> SqliteDatabase | PostgresDatabase:
    """The store's database as the settings say: `data_dir/file_name` (SQLite) or the shared server."""
    if settings.kind is RelationalKind.POSTGRESQL:
        return PostgresDatabase.open(settings.postgresql, schema)
    return SqliteDatabase.open(data_dir / file_name, schema.sqlite)


def open_migrated(settings: RelationalSettings, data_dir: Path, file_name: str, schema: Schema,
                  migrate: Callable[[Database], None]) -> SqliteDatabase | PostgresDatabase:
    """`open_database`, then `migrate` brings an older schema up to date; a database whose migration
    fails is closed again before the error goes on."""
    database = open_database(settings, data_dir, file_name, schema)
    try:
        migrate(database)
    except BaseException:
        database.close()
        raise
    return database
