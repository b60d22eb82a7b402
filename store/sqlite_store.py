"""The embedded store: one SQLite file in WAL mode, one writer, any number of readers.

The processor thread is the only writer: it writes a batch with `executemany` inside one open transaction
and calls `flush()` (a commit) once the batch's results must be durable, before it commits its bus offsets.
Readers (the API's thread pool) each borrow their own connection from a small pool; in WAL mode a reader
sees the last committed state and never waits for the writer, so the API stays fast while a batch is being
written. Data written but not yet flushed is invisible to readers.

Times are stored as INTEGER epoch ms; free-form maps (attributes, tags, evidence) as JSON TEXT, so SQLite's
JSON functions can filter on them later without a schema change.
"""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Final

import msgspec

from citywatch.models import (
    DeadLetter,
    Event,
    Evidence,
    Location,
    Prediction,
    Severity,
    Violation,
    ViolationStatus,
)
from store.base import (
    DeadLetterQuery,
    EventQuery,
    InvalidCursor,
    Page,
    Store,
    ViolationQuery,
    decode_cursor,
    encode_cursor,
)

FILE_NAME: Final = "citywatch.sqlite3"
SCHEMA_VERSION: Final = 1

# Each list query has an index per filter that ends in its newest-first sort key, so a filtered page is an
# index range scan that stops after `limit` rows instead of a sort of every matching row.
_SCHEMA: Final = """
CREATE TABLE events (
    event_id       TEXT    NOT NULL UNIQUE,
    device_id      TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    event_time_ms  INTEGER NOT NULL,
    ingest_time_ms INTEGER NOT NULL,
    source         TEXT    NOT NULL,
    lat            REAL,
    lon            REAL,
    attributes     TEXT    NOT NULL,
    tags           TEXT    NOT NULL
);
CREATE INDEX events_by_time   ON events (event_time_ms, event_id);
CREATE INDEX events_by_device ON events (device_id, event_time_ms, event_id);
CREATE INDEX events_by_kind   ON events (kind, event_time_ms, event_id);

CREATE TABLE violations (
    violation_id    TEXT    NOT NULL UNIQUE,
    type            TEXT    NOT NULL,
    severity        TEXT    NOT NULL,
    device_id       TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    start_time_ms   INTEGER NOT NULL,
    end_time_ms     INTEGER,
    updated_time_ms INTEGER NOT NULL,
    lat             REAL,
    lon             REAL,
    evidence        TEXT    NOT NULL,
    tags            TEXT    NOT NULL
);
CREATE INDEX violations_by_time   ON violations (start_time_ms, violation_id);
CREATE INDEX violations_by_device ON violations (device_id, start_time_ms, violation_id);
CREATE INDEX violations_by_type   ON violations (type, start_time_ms, violation_id);
CREATE INDEX violations_by_status ON violations (status, start_time_ms, violation_id);

-- AUTOINCREMENT: ids are never reused, even after old rows are deleted, so a cursor stays unambiguous.
CREATE TABLE dead_letters (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    reason           TEXT    NOT NULL,
    detail           TEXT    NOT NULL,
    topic            TEXT    NOT NULL,
    payload          BLOB    NOT NULL,
    received_time_ms INTEGER NOT NULL,
    source           TEXT    NOT NULL
);
-- The rowid (id) is the implicit last column of every index: these also serve ORDER BY (time, id).
CREATE INDEX dead_letters_by_time   ON dead_letters (received_time_ms);
CREATE INDEX dead_letters_by_reason ON dead_letters (reason, received_time_ms);
"""

# Forecasts, newest per (type, device): created on every open (IF NOT EXISTS) so a store made before this
# table existed gains it without a schema version change. Predictions are a current view, not history.
_PREDICTIONS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS predictions (
    type              TEXT    NOT NULL,
    device_id         TEXT    NOT NULL,
    computed_time_ms  INTEGER NOT NULL,
    predicted_time_ms INTEGER,
    value             REAL    NOT NULL,
    lat               REAL,
    lon               REAL,
    details           TEXT    NOT NULL,
    tags              TEXT    NOT NULL,
    PRIMARY KEY (type, device_id)
)
"""

# A forecast computed from older readings never replaces one computed from newer readings.
_UPSERT_PREDICTION: Final = """
INSERT INTO predictions
    (type, device_id, computed_time_ms, predicted_time_ms, value, lat, lon, details, tags)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (type, device_id) DO UPDATE SET
    computed_time_ms = excluded.computed_time_ms,
    predicted_time_ms = excluded.predicted_time_ms,
    value = excluded.value,
    lat = excluded.lat,
    lon = excluded.lon,
    details = excluded.details,
    tags = excluded.tags
WHERE excluded.computed_time_ms >= predictions.computed_time_ms
"""

# Idempotent by event_id: the first write wins. `ON CONFLICT (event_id) DO NOTHING` rather than
# `INSERT OR IGNORE`, which would also silently drop rows that break a NOT NULL constraint.
_INSERT_EVENT: Final = """
INSERT INTO events
    (event_id, device_id, kind, event_time_ms, ingest_time_ms, source, lat, lon, attributes, tags)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (event_id) DO NOTHING
"""

# A state with an older updated_time_ms never replaces a newer one, so a replayed or reordered `open`
# cannot reopen a cleared violation. At an equal updated_time_ms the write is an idempotent rewrite, except
# that `open` does not replace `cleared`: a violation that opens and clears at the same event time then
# stays cleared whatever order the two states are replayed in.
_UPSERT_VIOLATION: Final = """
INSERT INTO violations
    (violation_id, type, severity, device_id, status, start_time_ms, end_time_ms, updated_time_ms,
     lat, lon, evidence, tags)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (violation_id) DO UPDATE SET
    type = excluded.type,
    severity = excluded.severity,
    device_id = excluded.device_id,
    status = excluded.status,
    start_time_ms = excluded.start_time_ms,
    end_time_ms = excluded.end_time_ms,
    updated_time_ms = excluded.updated_time_ms,
    lat = excluded.lat,
    lon = excluded.lon,
    evidence = excluded.evidence,
    tags = excluded.tags
WHERE excluded.updated_time_ms > violations.updated_time_ms
   OR (excluded.updated_time_ms = violations.updated_time_ms
       AND NOT (violations.status = 'cleared' AND excluded.status = 'open'))
"""

_INSERT_DEAD_LETTER: Final = """
INSERT INTO dead_letters (reason, detail, topic, payload, received_time_ms, source)
VALUES (?, ?, ?, ?, ?, ?)
"""

_EVENT_COLUMNS: Final = (
    "event_id, device_id, kind, event_time_ms, ingest_time_ms, source, lat, lon, attributes, tags"
)
_VIOLATION_COLUMNS: Final = (
    "violation_id, type, severity, device_id, status, start_time_ms, end_time_ms, updated_time_ms, "
    "lat, lon, evidence, tags"
)
_DEAD_LETTER_COLUMNS: Final = "id, reason, detail, topic, payload, received_time_ms, source"

_SQLITE_INT_MIN: Final = -(2**63)
_SQLITE_INT_MAX: Final = 2**63 - 1

_json_encoder = msgspec.json.Encoder()
_decode_attributes = msgspec.json.Decoder(dict[str, Any]).decode
_decode_tags = msgspec.json.Decoder(dict[str, str]).decode
_decode_evidence = msgspec.json.Decoder(Evidence).decode


class StoreClosed(RuntimeError):
    """The store was closed; nothing can be read or written any more."""


def _json(value: object) -> str:
    return _json_encoder.encode(value).decode()


def _check_limit(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return limit


def _cursor_position(cursor: str) -> tuple[int, str]:
    time_ms, tiebreak = decode_cursor(cursor)
    # A forged time outside SQLite's INTEGER range would otherwise surface as OverflowError at bind time.
    if isinstance(time_ms, bool) or not _SQLITE_INT_MIN <= time_ms <= _SQLITE_INT_MAX:
        raise InvalidCursor(f"cursor {cursor[:40]!r} is not one this API returned")
    return time_ms, tiebreak


def _location(lat: float | None, lon: float | None) -> Location | None:
    return None if lat is None or lon is None else Location(lat=lat, lon=lon)


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


class _Where:
    """WHERE clause builder. A filter marked `indexed=False` is written as `+column`, which SQLite cannot
    use for an index: that pins the scan to the index we chose (the most selective filter) instead of
    leaving the choice to a planner that has no statistics on a fresh database."""

    def __init__(self) -> None:
        self.terms: list[str] = []
        self.params: list[Any] = []

    def equals(self, column: str, value: object, *, indexed: bool) -> None:
        self.terms.append(f"{'' if indexed else '+'}{column} = ?")
        self.params.append(value)

    def one_of(self, column: str, values: Sequence[object], *, indexed: bool) -> None:
        self.terms.append(f"{'' if indexed else '+'}{column} IN ({_placeholders(len(values))})")
        self.params.extend(values)

    def time_window(self, column: str, from_ms: int | None, to_ms: int | None) -> None:
        if from_ms is not None:
            self.terms.append(f"{column} >= ?")
            self.params.append(from_ms)
        if to_ms is not None:
            self.terms.append(f"{column} < ?")
            self.params.append(to_ms)

    def before(self, time_column: str, tiebreak_column: str, time_ms: int, tiebreak: object) -> None:
        # Keyset: rows strictly older than the cursor's row in (time, tiebreak) order. The plain `<=` on
        # the time column is what bounds the index range scan; the OR only filters the rows at that time.
        self.terms.append(f"{time_column} <= ? AND ({time_column} < ? OR {tiebreak_column} < ?)")
        self.params.extend((time_ms, time_ms, tiebreak))

    def sql(self) -> str:
        return f"WHERE {' AND '.join(self.terms)}" if self.terms else ""


class SqliteStore(Store):
    """The embedded store in the SQLite file at `path` (created, with its parent directories, if missing)."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers: set[sqlite3.Connection] = set()
        self._closed = False
        self._writer = self._connect()
        try:
            self._init_writer()
        except BaseException:
            self._writer.close()
            raise

    @classmethod
    def in_directory(cls, data_dir: pathlib.Path) -> SqliteStore:
        return cls(pathlib.Path(data_dir) / FILE_NAME)

    # -- connections ---------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the sqlite3 module never opens transactions on its own; this class does.
        # check_same_thread=False: close() may run on a thread other than the one that used a connection;
        # each connection is still used by one thread at a time (the write lock, the reader pool).
        # timeout: the busy timeout, for the rare moments a WAL reader must wait (e.g. WAL recovery).
        return sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)

    def _init_writer(self) -> None:
        conn = self._writer
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"{self.path}: SQLite could not enable WAL mode (got {mode!r})")
        # NORMAL in WAL mode: a commit is atomic and survives a crash of the process; only an OS crash or
        # power loss can lose the last commits (never corrupt the file). FULL would fsync on every commit.
        conn.execute("PRAGMA synchronous=NORMAL")
        # A larger page cache keeps the upper levels of the six write-side B-trees in memory on bulk writes.
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA temp_store=MEMORY")
        # Checkpoint every ~40 MB of WAL instead of 4 MB: consecutive batches dirty the same index pages
        # (one leaf per device), and a rarer checkpoint copies each such page back once instead of every
        # time. Measured +25-30% bulk insert rate at 1M readings (bench/store_choice.py); the WAL file
        # stays below ~80 MB.
        conn.execute("PRAGMA wal_autocheckpoint=10000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        elif version != SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: schema version {version}, this citywatch understands {SCHEMA_VERSION}"
            )
        conn.execute(_PREDICTIONS_SCHEMA)

    def _open_reader(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA query_only=ON")
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """Borrow a read connection: one per concurrent reader, reused afterwards (opening one per call
        would re-read the schema every time; one per thread would leak when the pool's threads retire)."""
        with self._pool_lock:
            if self._closed:
                raise StoreClosed(f"{self.path}: store is closed")
            if self._idle_readers:
                conn = self._idle_readers.pop()
            else:
                conn = self._open_reader()
                self._readers.add(conn)
        try:
            yield conn
        finally:
            with self._pool_lock:
                if self._closed:
                    # close() ran while this reader was busy: it is ours to close now.
                    self._readers.discard(conn)
                    conn.close()
                else:
                    self._idle_readers.append(conn)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._reader() as conn:
            return conn.execute(sql, params).fetchall()

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self._write_lock:
            if self._closed:
                raise StoreClosed(f"{self.path}: store is closed")
            conn = self._writer
            if not conn.in_transaction:
                # IMMEDIATE takes the write lock now; the transaction stays open until flush().
                conn.execute("BEGIN IMMEDIATE")
            # A savepoint makes each call all-or-nothing without giving up the earlier unflushed batches.
            conn.execute("SAVEPOINT write_batch")
            try:
                conn.executemany(sql, rows)
            except BaseException:
                # Some errors (disk full, I/O) already rolled the whole transaction back.
                if conn.in_transaction:
                    conn.execute("ROLLBACK TO write_batch")
                    conn.execute("RELEASE write_batch")
                raise
            conn.execute("RELEASE write_batch")

    # -- writes --------------------------------------------------------------------------------------------

    def write_events(self, events: Sequence[Event]) -> None:
        self._write(
            _INSERT_EVENT,
            [
                (
                    e.event_id,
                    e.device_id,
                    e.kind,
                    e.event_time_ms,
                    e.ingest_time_ms,
                    e.source,
                    None if e.location is None else e.location.lat,
                    None if e.location is None else e.location.lon,
                    _json(e.attributes),
                    _json(e.tags),
                )
                for e in events
            ],
        )

    def write_violations(self, violations: Sequence[Violation]) -> None:
        self._write(
            _UPSERT_VIOLATION,
            [
                (
                    v.violation_id,
                    v.type,
                    v.severity.value,
                    v.device_id,
                    v.status.value,
                    v.start_time_ms,
                    v.end_time_ms,
                    v.updated_time_ms,
                    None if v.location is None else v.location.lat,
                    None if v.location is None else v.location.lon,
                    _json(v.evidence),
                    _json(v.tags),
                )
                for v in violations
            ],
        )

    def write_dead_letters(self, dead_letters: Sequence[DeadLetter]) -> None:
        self._write(
            _INSERT_DEAD_LETTER,
            [(d.reason, d.detail, d.topic, d.payload, d.received_time_ms, d.source) for d in dead_letters],
        )

    def write_predictions(self, predictions: Sequence[Prediction]) -> None:
        self._write(
            _UPSERT_PREDICTION,
            [
                (
                    p.type,
                    p.device_id,
                    p.computed_time_ms,
                    p.predicted_time_ms,
                    p.value,
                    None if p.location is None else p.location.lat,
                    None if p.location is None else p.location.lon,
                    _json(p.details),
                    _json(p.tags),
                )
                for p in predictions
            ],
        )

    def query_predictions(self, type: str, limit: int = 1000) -> list[Prediction]:
        limit = _check_limit(limit)
        # Soonest first; bins without a forecast (no rising trend) last.
        rows = self._read(
            "SELECT type, device_id, computed_time_ms, predicted_time_ms, value, lat, lon, details, tags "
            "FROM predictions WHERE type = ? "
            "ORDER BY predicted_time_ms IS NULL, predicted_time_ms, device_id LIMIT ?",
            (type, limit),
        )
        return [
            Prediction(type=row[0], device_id=row[1], computed_time_ms=row[2], predicted_time_ms=row[3],
                       value=row[4], location=_location(row[5], row[6]),
                       details=_decode_attributes(row[7]), tags=_decode_tags(row[8]))
            for row in rows
        ]

    def flush(self) -> None:
        with self._write_lock:
            if self._closed:
                raise StoreClosed(f"{self.path}: store is closed")
            if self._writer.in_transaction:
                self._writer.execute("COMMIT")

    # -- reads ---------------------------------------------------------------------------------------------

    def query_events(self, query: EventQuery) -> Page[Event]:
        limit = _check_limit(query.limit)
        where = _Where()
        # Drive the scan by the device (a few rows per device) before the kind (many rows per kind).
        if query.device_id is not None:
            where.equals("device_id", query.device_id, indexed=True)
        if query.kind is not None:
            where.equals("kind", query.kind, indexed=query.device_id is None)
        where.time_window("event_time_ms", query.from_ms, query.to_ms)
        if query.cursor is not None:
            where.before("event_time_ms", "event_id", *_cursor_position(query.cursor))
        rows = self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events {where.sql()} "
            "ORDER BY event_time_ms DESC, event_id DESC LIMIT ?",
            [*where.params, limit + 1],
        )
        items = [
            Event(
                event_id=event_id,
                device_id=device_id,
                kind=kind,
                event_time_ms=event_time_ms,
                ingest_time_ms=ingest_time_ms,
                attributes=_decode_attributes(attributes),
                location=_location(lat, lon),
                source=source,
                tags=_decode_tags(tags),
            )
            for (event_id, device_id, kind, event_time_ms, ingest_time_ms, source, lat, lon, attributes, tags)
            in rows[:limit]
        ]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = encode_cursor(last.event_time_ms, last.event_id)
        return Page(items, next_cursor)

    def query_violations(self, query: ViolationQuery) -> Page[Violation]:
        limit = _check_limit(query.limit)
        where = _Where()
        # The index is chosen by selectivity: device (few violations each), then type, then status.
        driving = next(
            (name for name, on in (("device", query.device_ids), ("type", query.types),
                                   ("status", query.status is not None)) if on),
            None,
        )
        if query.device_ids:
            where.one_of("device_id", query.device_ids, indexed=driving == "device")
        if query.types:
            where.one_of("type", query.types, indexed=driving == "type")
        if query.status is not None:
            where.equals("status", query.status.value, indexed=driving == "status")
        where.time_window("start_time_ms", query.from_ms, query.to_ms)
        if query.cursor is not None:
            where.before("start_time_ms", "violation_id", *_cursor_position(query.cursor))
        rows = self._read(
            f"SELECT {_VIOLATION_COLUMNS} FROM violations {where.sql()} "
            "ORDER BY start_time_ms DESC, violation_id DESC LIMIT ?",
            [*where.params, limit + 1],
        )
        items = [self._violation_from_row(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = encode_cursor(last.start_time_ms, last.violation_id)
        return Page(items, next_cursor)

    def get_violation(self, violation_id: str) -> Violation | None:
        rows = self._read(
            f"SELECT {_VIOLATION_COLUMNS} FROM violations WHERE violation_id = ?", [violation_id]
        )
        return self._violation_from_row(rows[0]) if rows else None

    @staticmethod
    def _violation_from_row(row: tuple[Any, ...]) -> Violation:
        (violation_id, type_, severity, device_id, status, start_time_ms, end_time_ms, updated_time_ms,
         lat, lon, evidence, tags) = row
        return Violation(
            violation_id=violation_id,
            type=type_,
            severity=Severity(severity),
            device_id=device_id,
            start_time_ms=start_time_ms,
            status=ViolationStatus(status),
            end_time_ms=end_time_ms,
            location=_location(lat, lon),
            evidence=_decode_evidence(evidence),
            tags=_decode_tags(tags),
            updated_time_ms=updated_time_ms,
        )

    def query_dead_letters(self, query: DeadLetterQuery) -> Page[DeadLetter]:
        limit = _check_limit(query.limit)
        where = _Where()
        if query.reason is not None:
            where.equals("reason", query.reason, indexed=True)
        if query.cursor is not None:
            time_ms, tiebreak = _cursor_position(query.cursor)
            try:
                last_id = int(tiebreak)
            except ValueError:
                raise InvalidCursor(f"cursor {query.cursor[:40]!r} is not one this API returned") from None
            where.before("received_time_ms", "id", time_ms, last_id)
        rows = self._read(
            f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters {where.sql()} "
            "ORDER BY received_time_ms DESC, id DESC LIMIT ?",
            [*where.params, limit + 1],
        )
        items = [
            DeadLetter(
                reason=reason,
                detail=detail,
                topic=topic,
                payload=payload,
                received_time_ms=received_time_ms,
                source=source,
            )
            for (_id, reason, detail, topic, payload, received_time_ms, source) in rows[:limit]
        ]
        next_cursor = None
        if len(rows) > limit:
            last_row = rows[limit - 1]
            next_cursor = encode_cursor(last_row[5], str(last_row[0]))
        return Page(items, next_cursor)

    def count_dead_letters_by_reason(self) -> dict[str, int]:
        return dict(self._read("SELECT reason, count(*) FROM dead_letters GROUP BY reason"))

    # -- lifecycle -----------------------------------------------------------------------------------------

    def ping(self) -> None:
        # Touches the file (a read transaction on the schema), unlike a bare `SELECT 1`.
        self._read("SELECT count(*) FROM sqlite_schema")

    def close(self) -> None:
        """Commit what is pending (a clean stop loses nothing), then close every connection. Idempotent."""
        with self._write_lock:
            if self._closed:
                return
            with self._pool_lock:
                self._closed = True
                idle, self._idle_readers = self._idle_readers, []
                for conn in idle:
                    self._readers.discard(conn)
                    conn.close()
            try:
                if self._writer.in_transaction:
                    self._writer.execute("COMMIT")
                # Refreshes the planner's statistics where they are stale, as SQLite recommends at close;
                # analysis_limit samples each index so this stays fast on a large file.
                self._writer.execute("PRAGMA analysis_limit=1000")
                self._writer.execute("PRAGMA optimize")
            finally:
                self._writer.close()
