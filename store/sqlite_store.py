"""The embedded store: one SQLite file in WAL mode, one writer, any number of readers.

The processor thread is the only writer: it writes a batch with `executemany` inside one open transaction
and calls `flush()` (a commit) once the batch's results must be durable, before it commits its bus offsets.
Readers (the API's thread pool) each borrow their own connection from a small pool; in WAL mode a reader
sees the last committed state and never waits for the writer, so the API stays fast while a batch is being
written. Data written but not yet flushed is invisible to readers. Once started, a checkpointer copies
committed pages from the WAL back into the database file on a thread and connection of its own, so that a
commit never does (see `_WalCheckpointer`).

Times are stored as INTEGER epoch ms; free-form maps (attributes, tags, evidence) as JSON TEXT, so SQLite's
JSON functions can filter on them later without a schema change.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final

import msgspec

from core.models import (
    DeadLetter,
    Event,
    Evidence,
    ExposureTotal,
    LifecycleChange,
    LifecycleEntry,
    Location,
    Prediction,
    Severity,
    Violation,
    ViolationStatus,
    dead_letter_id,
    history_order,
    rule_change,
)
from store import buckets
from store.base import (
    Bucket,
    CountRow,
    DeadLetterQuery,
    Dimension,
    EventQuery,
    ExposureQuery,
    ExposureSum,
    InvalidCursor,
    LatestReadingsQuery,
    Page,
    QueryTooLarge,
    ReadingBucket,
    ReadingPoint,
    ReadingSeries,
    ReadingSeriesQuery,
    RetentionPolicy,
    Store,
    TopQuery,
    TopRow,
    ViolationCountQuery,
    ViolationFilter,
    ViolationQuery,
    decode_cursor,
    encode_cursor,
)

log = logging.getLogger(__name__)

FILE_NAME: Final = "citywatch.sqlite3"
SCHEMA_VERSION: Final = 4
# How long a connection waits for another one's write lock before giving up ("database is locked").
BUSY_TIMEOUT_MS: Final = 5_000
# Opening waits longer: another process may be creating or migrating the schema of the same file.
SCHEMA_LOCK_WAIT_MS: Final = 120_000
# The WAL is copied back and started over once it holds this many pages (of 4 KiB).
WAL_RESTART_PAGES: Final = 10_000
# The checkpointer's thread copies what was committed at most this often.
CHECKPOINT_INTERVAL_S: Final = 0.2

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

# Batches reach SQLite as one JSON array of the structs themselves (msgspec encodes them in one call),
# bound to one parameter and unpacked by `json_each`. One statement per batch releases the GIL once for the
# whole batch, where `executemany` takes it back for every row: behind a busy rule engine each of those
# waits for the engine's switch interval, which made a batch several times slower (BENCHMARKS.md, Kafka
# mode); and the per-row work (reading fields, rollups) is SQLite's C instead of Python holding the GIL.
# The rows pass through a CTE so each row's text is produced once and its fields are read from it:
# reading them from json_each's `value` directly renders the row again for every column.
# `WHERE true` is SQLite's required separator between `SELECT ... FROM` and an upsert's ON CONFLICT.
_BATCH: Final = "WITH batch(row) AS (SELECT value FROM json_each(?))"


def _fields(columns: dict[str, str], source: str = "row") -> str:
    """The SELECT list reading each column from a batch struct: column -> JSON path (`json:` prefix: the
    value as JSON text, e.g. a dictionary; otherwise the SQL value)."""
    return ", ".join(f"{source}->'{path.removeprefix('json:')}'" if path.startswith("json:")
                     else f"{source}->>'{path}'" for path in columns.values())


def _insert_from_batch(table: str, columns: dict[str, str]) -> str:
    return (f"{_BATCH} INSERT INTO {table} ({', '.join(columns)}) "
            f"SELECT {_fields(columns)} FROM batch WHERE true")


def _floor_to(expression: str, size: int) -> str:
    """SQL for the start of the `size` bucket holding an integer (floored, as Python's //, not truncated)."""
    return f"({expression} - ((({expression}) % {size}) + {size}) % {size})"


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
_UPSERT_PREDICTIONS: Final = f"""
{_insert_from_batch("predictions", {
    "type": "$.type", "device_id": "$.device_id", "computed_time_ms": "$.computed_time_ms",
    "predicted_time_ms": "$.predicted_time_ms", "value": "$.value", "lat": "$.location.lat",
    "lon": "$.location.lon", "details": "json:$.details", "tags": "json:$.tags"})}
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

# The denominators of the indices (core/exposures.py): the latest running total per device, local day and
# counter, with the device's place tags ('' when it has none) so sums per place need no join. Created on
# every open (IF NOT EXISTS), like the predictions, so an older file gains it without a version change.
_EXPOSURES_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS exposure_totals (
    day          TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    counter      TEXT NOT NULL,
    value        REAL NOT NULL,
    intersection TEXT NOT NULL,
    grid         TEXT NOT NULL,
    district     TEXT NOT NULL,
    PRIMARY KEY (day, device_id, counter)
) WITHOUT ROWID""",
)

_UPSERT_EXPOSURE: Final = """
INSERT INTO exposure_totals (day, device_id, counter, value, intersection, grid, district)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (day, device_id, counter) DO UPDATE SET
    value = excluded.value, intersection = excluded.intersection, grid = excluded.grid,
    district = excluded.district
"""

# The column each place kind is summed by; the city is every row.
_EXPOSURE_PLACE_COLUMNS: Final = {"device": "device_id", "intersection": "intersection", "grid": "grid",
                                  "district": "district", "city": "''"}

# The month's sums per place, kept by triggers in the writer's transaction, so that a month (or a quarter,
# a half-year) of a city's totals is read from one row per (counter, intersection, grid, district) instead
# of one per device-day (BENCHMARKS.md, "Civility indices"). One upsert per written total: a replaced total
# takes its old value out of its old place and adds the new one to its new place; a deleted one is taken out.
_EXPOSURE_ROLLUP_KINDS: Final = ("intersection", "grid", "district", "city")
_EXPOSURE_ROLLUP_TABLE: Final = """CREATE TABLE IF NOT EXISTS exposure_month_sums (
    month        TEXT NOT NULL,
    counter      TEXT NOT NULL,
    intersection TEXT NOT NULL,
    grid         TEXT NOT NULL,
    district     TEXT NOT NULL,
    ticks        INTEGER NOT NULL,
    PRIMARY KEY (month, counter, intersection, grid, district)
) WITHOUT ROWID"""
# Sums are kept in whole ticks of 1/60,000 of a unit (a millisecond of a minute; totals of time are whole
# milliseconds, counts whole numbers), so that adding and taking out totals in any order leaves exactly
# the sum of the current totals: a replay gives identical figures, a moved device leaves exactly zero.
_TICKS_PER_UNIT: Final = 60_000


def _exposure_rollup_add(row: str, sign: str) -> str:
    """The statement adding `row`'s (NEW or OLD) value, times `sign`, to its month's sum at its place."""
    return (f"INSERT INTO exposure_month_sums (month, counter, intersection, grid, district, ticks) "
            f"VALUES (substr({row}.day, 1, 7), {row}.counter, {row}.intersection, {row}.grid, "
            f"{row}.district, {sign}round({row}.value * {_TICKS_PER_UNIT})) "
            f"ON CONFLICT (month, counter, intersection, grid, district) "
            f"DO UPDATE SET ticks = ticks + excluded.ticks;")


_EXPOSURE_ROLLUP_TRIGGERS: Final = (
    f"CREATE TRIGGER IF NOT EXISTS exposure_month_sums_insert AFTER INSERT ON exposure_totals BEGIN "
    f"{_exposure_rollup_add('NEW', '')} END",
    f"CREATE TRIGGER IF NOT EXISTS exposure_month_sums_update AFTER UPDATE ON exposure_totals BEGIN "
    f"{_exposure_rollup_add('OLD', '-')} {_exposure_rollup_add('NEW', '')} END",
    f"CREATE TRIGGER IF NOT EXISTS exposure_month_sums_delete AFTER DELETE ON exposure_totals BEGIN "
    f"{_exposure_rollup_add('OLD', '-')} END",
)
# A file that has totals from before the sums existed: its sums, once, when the table is created.
_EXPOSURE_ROLLUP_BACKFILL: Final = (
    "INSERT INTO exposure_month_sums (month, counter, intersection, grid, district, ticks) "
    f"SELECT substr(day, 1, 7), counter, intersection, grid, district, sum(round(value * {_TICKS_PER_UNIT})) "
    "FROM exposure_totals "
    "GROUP BY 1, 2, 3, 4, 5",)


def _whole_months(first_day: str, last_day: str) -> tuple[list[str], list[tuple[str, str]]]:
    """[first_day, last_day] as the whole months in it ("YYYY-MM") and the day ranges left at its ends."""
    first, last = date.fromisoformat(first_day), date.fromisoformat(last_day)
    months: list[str] = []
    start = first if first.day == 1 else _next_month(first)
    while start <= last and _next_month(start) - timedelta(days=1) <= last:
        months.append(start.isoformat()[:7])
        start = _next_month(start)
    if not months:
        return [], [(first_day, last_day)] if first <= last else []
    edges = []
    month_start = date.fromisoformat(months[0] + "-01")
    if first < month_start:
        edges.append((first_day, (month_start - timedelta(days=1)).isoformat()))
    after = _next_month(date.fromisoformat(months[-1] + "-01"))
    if after <= last:
        edges.append((after.isoformat(), last_day))
    return months, edges


def _next_month(day: date) -> date:
    return date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)


# Version 2: the control-centre queries. Tag columns on violations (filters without JSON parsing), rollup
# tables maintained on write (in the writer's transaction, from the rows that were really new: a duplicate
# delivery or a status change never counts twice), and the latest reading of every device.
# Rollups keep '' for a missing tag so that it can be part of a primary key. (AFTER INSERT triggers did the
# same job, but cost 98% of the write rate: 2.2k instead of 160k readings/s, bench/store.py.)
_MIGRATION_V2: Final = """
ALTER TABLE violations ADD COLUMN grid TEXT;
ALTER TABLE violations ADD COLUMN district TEXT;
ALTER TABLE violations ADD COLUMN department TEXT;
ALTER TABLE violations ADD COLUMN intersection TEXT;
UPDATE violations SET grid = json_extract(tags, '$.grid'), district = json_extract(tags, '$.district'),
    department = json_extract(tags, '$.department'), intersection = json_extract(tags, '$.intersection');
CREATE INDEX violations_by_end ON violations (end_time_ms);

-- Numeric attributes of readings per device and hour: outlive the raw readings (retention).
CREATE TABLE reading_stats_hourly (
    device_id TEXT    NOT NULL,
    attribute TEXT    NOT NULL,
    hour_ms   INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    count     INTEGER NOT NULL,
    sum_value REAL    NOT NULL,
    min_value REAL    NOT NULL,
    max_value REAL    NOT NULL,
    PRIMARY KEY (device_id, attribute, hour_ms)
) WITHOUT ROWID;
CREATE INDEX reading_stats_by_hour ON reading_stats_hourly (hour_ms);

-- The newest event of each device (ties at one time broken by the larger event id, as in the lists).
CREATE TABLE latest_readings (
    device_id      TEXT    NOT NULL PRIMARY KEY,
    event_id       TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    event_time_ms  INTEGER NOT NULL,
    ingest_time_ms INTEGER NOT NULL,
    source         TEXT    NOT NULL,
    lat            REAL,
    lon            REAL,
    attributes     TEXT    NOT NULL,
    tags           TEXT    NOT NULL
);
CREATE INDEX latest_readings_by_kind ON latest_readings (kind, device_id);


-- Backfill from a version-1 file (no-ops on a new one).
INSERT INTO reading_stats_hourly
    SELECT device_id, j.key, event_time_ms / 3600000 * 3600000, kind, count(*), total(j.value), min(j.value),
           max(j.value)
    FROM events, json_each(events.attributes) AS j WHERE j.type IN ('integer', 'real')
    GROUP BY device_id, j.key, event_time_ms / 3600000;
INSERT INTO latest_readings
    SELECT event_id_device.device_id, e.event_id, e.kind, e.event_time_ms, e.ingest_time_ms, e.source,
           e.lat, e.lon, e.attributes, e.tags
    FROM (SELECT device_id, max(event_time_ms) AS t FROM events GROUP BY device_id) AS event_id_device
    JOIN events AS e ON e.device_id = event_id_device.device_id AND e.event_time_ms = event_id_device.t
    WHERE e.event_id = (SELECT max(event_id) FROM events AS x
                        WHERE x.device_id = e.device_id AND x.event_time_ms = e.event_time_ms)
"""

# Version 3: dead letters are upserted by their deterministic id (a Kafka replay must not store one twice).
# The column is filled in by `_backfill_dead_letter_ids` before the unique index is built.
_MIGRATION_V3_COLUMN: Final = "ALTER TABLE dead_letters ADD COLUMN dead_letter_id TEXT NOT NULL DEFAULT ''"
# A version-2 file may hold replayed copies already: the first of each is kept.
_MIGRATION_V3_INDEX: Final = """
DELETE FROM dead_letters WHERE id NOT IN (SELECT min(id) FROM dead_letters GROUP BY dead_letter_id);
CREATE UNIQUE INDEX dead_letters_by_id ON dead_letters (dead_letter_id)
"""

# Version 4: the violation lifecycle. When the rule opened a violation (kept through clearing; unknown, so
# NULL, for violations stored before), and every state change a rule made, once per (violation, change,
# event time) so a replay adds nothing. The people's actions are kept apart, in the relational database.
_MIGRATION_V4: Final = """
ALTER TABLE violations ADD COLUMN detected_time_ms INTEGER;
CREATE TABLE violation_history (
    violation_id TEXT    NOT NULL,
    change       TEXT    NOT NULL,
    time_ms      INTEGER NOT NULL,
    actor        TEXT    NOT NULL,
    PRIMARY KEY (violation_id, change, time_ms)
) WITHOUT ROWID
"""

@dataclass(frozen=True)
class _Rollup:
    """A table of violation counts per (time bucket, dims), kept on write. Several narrow rollups instead of
    one wide one: a dashboard query reads the smallest table that has every dimension it groups or filters
    by, and a narrow table is 10-100x smaller than the raw rows (a wide one, with grid x intersection x
    severity x type, is almost as large as the raw table at city densities)."""

    table: str
    time_column: str
    size_ms: int
    dims: tuple[str, ...]

    def schema(self) -> list[str]:
        columns = ", ".join(f"{d} TEXT NOT NULL" for d in self.dims)
        keys = ", ".join((self.time_column, *self.dims))
        return [f"CREATE TABLE {self.table} ({self.time_column} INTEGER NOT NULL, {columns}, "
                f"count INTEGER NOT NULL, PRIMARY KEY ({keys})) WITHOUT ROWID"]

    def backfill(self) -> str:
        # From a version-1 file; a no-op on a new one.
        values = ", ".join(f"coalesce({d}, '')" for d in self.dims)
        groups = ", ".join(str(i + 1) for i in range(len(self.dims) + 1))
        return (f"INSERT INTO {self.table} SELECT start_time_ms / {self.size_ms} * {self.size_ms}, {values}, "
                f"count(*) FROM violations GROUP BY {groups}")

    def count_new(self) -> str:
        """Counts the batch's violations not stored yet (`_FILL_NEW_VIOLATIONS`) into this table."""
        dims = ", ".join(self.dims)
        return (f"INSERT INTO {self.table} ({self.time_column}, {dims}, count) "
                f"SELECT {_floor_to('start_time_ms', self.size_ms)} AS bucket, {dims}, count(*) "
                f"FROM temp.new_violations GROUP BY bucket, {dims} "
                "ON CONFLICT DO UPDATE SET count = count + excluded.count")


_AREA: Final = ("grid", "district", "department", "intersection")
# A batch's violations that are not stored yet, one row each (a batch may hold several states of one; type,
# severity, tags and start are those of its first state, as counted), with the rollups' dimensions, into a
# temporary table the rollups count from. Run before the batch is upserted. Missing area tags count as "".
_FILL_NEW_VIOLATIONS: Final = (
    f"{_BATCH} INSERT INTO temp.new_violations SELECT min(row->>'start_time_ms'), row->>'device_id', "
    "row->>'type', row->>'severity', "
    + ", ".join(f"coalesce(row->>'$.tags.{name}', '')" for name in _AREA)
    + " FROM batch WHERE row->>'violation_id' NOT IN (SELECT violation_id FROM violations) "
    "GROUP BY row->>'violation_id'"
)
# In order of preference: smallest first, at the densities bench/store.py generates (2,000 devices, 8 types,
# 100 grids, 10 districts, 200 intersections); the sizes are the most rows 30 days can hold.
_ROLLUPS: Final = (
    _Rollup("violation_counts_hourly_type", "hour_ms", 3_600_000, ("type",)),  # 5.8k
    _Rollup("violation_counts_daily_intersection", "day_ms", 86_400_000, ("intersection",)),  # 6k
    _Rollup("violation_counts_daily_type_district", "day_ms", 86_400_000,
            ("type", "district", "department")),  # 7.2k
    _Rollup("violation_counts_daily_grid", "day_ms", 86_400_000, ("grid", "district", "department")),  # 9k
    _Rollup("violation_counts_daily_device", "day_ms", 86_400_000, ("device_id",)),  # 60k
    _Rollup("violation_counts_hourly_type_district", "hour_ms", 3_600_000,
            ("type", "district", "department")),  # 173k
    _Rollup("violation_counts_daily_area", "day_ms", 86_400_000, ("type", *_AREA)),  # 216k
    _Rollup("violation_counts_daily_device_type", "day_ms", 86_400_000, ("device_id", "type")),  # 480k
    _Rollup("violation_counts_hourly", "hour_ms", 3_600_000, ("type", "severity", *_AREA)),
    _Rollup("violation_counts_daily", "day_ms", 86_400_000, ("device_id", "type", "severity", *_AREA)),
)


_EVENT_COLUMNS_FROM_JSON: Final = {
    "event_id": "$.event_id", "device_id": "$.device_id", "kind": "$.kind",
    "event_time_ms": "$.event_time_ms", "ingest_time_ms": "$.ingest_time_ms", "source": "$.source",
    "lat": "$.location.lat", "lon": "$.location.lon", "attributes": "json:$.attributes",
    "tags": "json:$.tags",
}

# A batch of events is read from its JSON once, into a temporary table of the writer's connection
# (`_WRITER_TEMP_TABLES`), and the events, their rollups and the latest readings are written from there.
_WRITER_TEMP_TABLES: Final = (
    f"CREATE TEMP TABLE batch_events ({', '.join(_EVENT_COLUMNS_FROM_JSON)})",
    "CREATE TEMP TABLE new_violations (start_time_ms, device_id, type, severity, "
    f"{', '.join(_AREA)})",
)

_FILL_BATCH_EVENTS: Final = _insert_from_batch("temp.batch_events", _EVENT_COLUMNS_FROM_JSON)

# Idempotent by event_id: the first write wins. `ON CONFLICT (event_id) DO NOTHING` rather than
# `INSERT OR IGNORE`, which would also silently drop rows that break a NOT NULL constraint.
_INSERT_EVENTS: Final = f"""
INSERT INTO events ({", ".join(_EVENT_COLUMNS_FROM_JSON)})
SELECT {", ".join(_EVENT_COLUMNS_FROM_JSON)} FROM temp.batch_events WHERE true
ON CONFLICT (event_id) DO NOTHING
"""

# A state with an older updated_time_ms never replaces a newer one, so a replayed or reordered `open`
# cannot reopen a cleared violation. At an equal updated_time_ms the write is an idempotent rewrite, except
# that `open` does not replace `cleared`: a violation that opens and clears at the same event time then
# stays cleared whatever order the two states are replayed in.
_UPSERT_VIOLATIONS: Final = f"""
{_insert_from_batch("violations", {
    "violation_id": "$.violation_id", "type": "$.type", "severity": "$.severity", "device_id": "$.device_id",
    "status": "$.status", "start_time_ms": "$.start_time_ms", "end_time_ms": "$.end_time_ms",
    "updated_time_ms": "$.updated_time_ms", "lat": "$.location.lat", "lon": "$.location.lon",
    "evidence": "json:$.evidence", "tags": "json:$.tags", "grid": "$.tags.grid",
    "district": "$.tags.district", "department": "$.tags.department", "intersection": "$.tags.intersection",
    "detected_time_ms": "$.detected_time_ms"})}
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
    tags = excluded.tags,
    grid = excluded.grid,
    district = excluded.district,
    department = excluded.department,
    intersection = excluded.intersection,
    -- Every state of one violation carries the same detection time; the earliest known one is kept.
    detected_time_ms = coalesce(min(violations.detected_time_ms, excluded.detected_time_ms),
                                violations.detected_time_ms, excluded.detected_time_ms)
WHERE excluded.updated_time_ms > violations.updated_time_ms
   OR (excluded.updated_time_ms = violations.updated_time_ms
       AND NOT (violations.status = 'cleared' AND excluded.status = 'open'))
"""

# Every numeric attribute (JSON integers and reals: booleans and nulls are other JSON types, and msgspec
# writes NaN and infinities as null) per device and hour, from the batch's new events. total(), not sum():
# sum() of integers raises "integer overflow" past 2^63, which a few large integer readings (nanosecond
# clocks, counters) in one batch reached and which stopped the processor; total() sums as a REAL, the
# column's type.
_UPSERT_READING_STATS: Final = f"""
INSERT INTO reading_stats_hourly
    (device_id, attribute, hour_ms, kind, count, sum_value, min_value, max_value)
SELECT device_id, attribute.key, {_floor_to("event_time_ms", buckets.HOUR_MS)} AS hour_ms, min(kind),
       count(*), total(attribute.value), min(attribute.value), max(attribute.value)
FROM temp.batch_events AS batch, json_each(batch.attributes) AS attribute
WHERE attribute.type IN ('integer', 'real')
GROUP BY device_id, attribute.key, hour_ms
ON CONFLICT DO UPDATE SET count = count + excluded.count, sum_value = sum_value + excluded.sum_value,
    min_value = min(min_value, excluded.min_value), max_value = max(max_value, excluded.max_value)
"""

# The newest event of each device in a batch (ties broken by the larger id), kept if newer than the stored.
_UPSERT_LATEST_READINGS: Final = f"""
INSERT INTO latest_readings ({", ".join(_EVENT_COLUMNS_FROM_JSON)})
SELECT {", ".join(_EVENT_COLUMNS_FROM_JSON)} FROM (
    SELECT *, row_number() OVER (PARTITION BY device_id ORDER BY event_time_ms DESC, event_id DESC) AS rank
    FROM temp.batch_events)
WHERE rank = 1
ON CONFLICT (device_id) DO UPDATE SET event_id = excluded.event_id, kind = excluded.kind,
    event_time_ms = excluded.event_time_ms, ingest_time_ms = excluded.ingest_time_ms,
    source = excluded.source, lat = excluded.lat, lon = excluded.lon,
    attributes = excluded.attributes, tags = excluded.tags
WHERE excluded.event_time_ms > latest_readings.event_time_ms
   OR (excluded.event_time_ms = latest_readings.event_time_ms
       AND excluded.event_id > latest_readings.event_id)
"""

# A rule's state changes (core.models.rule_change), kept once: a replay writes the same keys again.
_INSERT_RULE_CHANGES: Final = f"""
{_insert_from_batch("violation_history", {
    "violation_id": "$.violation_id", "change": "$.change", "time_ms": "$.time_ms", "actor": "$.actor"})}
ON CONFLICT DO NOTHING
"""

_INSERT_DEAD_LETTER: Final = """
INSERT INTO dead_letters (reason, detail, topic, payload, received_time_ms, source, dead_letter_id)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (dead_letter_id) DO NOTHING
"""

_EVENT_COLUMNS: Final = (
    "event_id, device_id, kind, event_time_ms, ingest_time_ms, source, lat, lon, attributes, tags"
)
_VIOLATION_COLUMNS: Final = (
    "violation_id, type, severity, device_id, status, start_time_ms, end_time_ms, updated_time_ms, "
    "lat, lon, evidence, tags, detected_time_ms"
)
_DEAD_LETTER_COLUMNS: Final = "id, reason, detail, topic, payload, received_time_ms, source, dead_letter_id"

_SQLITE_INT_MIN: Final = -(2**63)
_SQLITE_INT_MAX: Final = 2**63 - 1

_json_encoder = msgspec.json.Encoder()
_decode_attributes = msgspec.json.Decoder(dict[str, Any]).decode
_decode_tags = msgspec.json.Decoder(dict[str, str]).decode
_decode_evidence = msgspec.json.Decoder(Evidence).decode


class StoreClosed(RuntimeError):
    """The store was closed; nothing can be read or written any more."""


class _WalCheckpointer:
    """Copies committed pages from the WAL back into the database file, off the writer's path.

    SQLite's own (automatic) checkpoint runs inside the COMMIT that takes the WAL past its threshold: the
    writer copies every page written since the last one into the database file and syncs it while the
    processor waits. With the events' random-key indexes, each small batch rewrites hundreds of pages, so
    that happened about once a second at 2,500 events/s and held the commit 70-270 ms (BENCHMARKS.md,
    "Latency at 5,000 events/s"), the largest part of the publish-to-stored tail.

    Here a thread with its own connection runs a PASSIVE checkpoint after commits (at most one every
    `interval_s`): it copies what is committed while the writer goes on appending to the WAL. SQLite
    starts writing the WAL from its beginning again only when a write transaction begins with every
    committed page copied, which a checkpoint running beside a busy writer rarely finishes in time for.
    So once the WAL holds `restart_pages` pages, the checkpointer copies the rest between two batches
    (with the writer's lock held and no write transaction open: only the pages of the last commits, as
    the unlocked passes copied the others), and the next batch starts the WAL over. The WAL file stays
    about as large as it was with the automatic checkpoint at that threshold.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], writer: sqlite3.Connection,
                 write_lock: threading.Lock, *, restart_pages: int, interval_s: float) -> None:
        self._conn = connect()
        self._writer = writer
        self._write_lock = write_lock
        self.restart_pages = restart_pages
        self.interval_s = interval_s
        self._committed = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="citywatch-sqlite-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def committed(self) -> None:
        """The writer committed: there are pages to copy."""
        self._committed.set()

    def stop(self) -> None:
        self._stopping.set()
        self._committed.set()
        self._thread.join(30)
        if self._thread.is_alive():
            log.error("the SQLite checkpointer did not stop within 30 s")
            return
        self._conn.close()

    def _run(self) -> None:
        wal_pages = 0
        while True:
            self._committed.wait()
            if self._stopping.is_set():
                return
            self._committed.clear()
            try:
                wal_pages = self._restart_ready() if wal_pages >= self.restart_pages else self._copy()
            except sqlite3.Error as exc:  # tried again after the next commit; the WAL grows meanwhile
                log.warning("SQLite checkpoint failed: %s", exc)
            if self._stopping.wait(self.interval_s):
                return

    def _copy(self) -> int:
        """One PASSIVE checkpoint; returns the pages the WAL holds."""
        _busy, wal_pages, _copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(wal_pages)

    def _restart_ready(self) -> int:
        """Copy every committed page while no write transaction is open, so that the next one starts the
        WAL over; returns the pages still to count towards the next restart (0 once it is ready).
        Most pages are copied first without the lock, so that the writer waits only for the last few."""
        self._copy()
        with self._write_lock:
            if self._writer.in_transaction:  # a batch is being written: after its commit
                return self.restart_pages
            _busy, wal_pages, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        # Not all copied: a reader still uses older pages of the WAL; tried again after the next commit.
        return 0 if copied == wal_pages else int(wal_pages)


def _encode_json(structs: Sequence[msgspec.Struct]) -> str:
    # Text, not bytes: SQLite reads a bound bytes object as a BLOB, which its JSON functions refuse.
    return _json_encoder.encode(structs).decode()


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


def _backfill_dead_letter_ids(conn: sqlite3.Connection) -> None:
    """Give the dead letters of a version-2 file their ids (computed in Python: SQLite has no BLAKE2)."""
    rows = conn.execute(
        "SELECT id, reason, detail, topic, payload, received_time_ms, source FROM dead_letters")
    conn.executemany(
        "UPDATE dead_letters SET dead_letter_id = ? WHERE id = ?",
        [(dead_letter_id(source, topic, reason, detail, received_time_ms, payload), row_id)
         for row_id, reason, detail, topic, payload, received_time_ms, source in rows.fetchall()],
    )


def _statements(script: str) -> Iterator[str]:
    """The complete SQL statements of a script, in order (triggers contain `;` inside BEGIN ... END)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
    if pending.strip(" \n;"):
        raise ValueError(f"incomplete SQL statement: {pending[:80]!r}")


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


def _event_from_row(row: Sequence[Any]) -> Event:
    (event_id, device_id, kind, event_time_ms, ingest_time_ms, source, lat, lon, attributes, tags) = row
    return Event(
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


def _json_path(attribute: str) -> str:
    return '$."' + attribute.replace('"', "") + '"'


# Bound on the rows an aggregate returns (buckets x groups).
MAX_RESULT_ROWS: Final = 50_000


@dataclass(frozen=True)
class _ViolationSource:
    """Where violation counts are read from: the raw table or one of its rollups."""

    table: str
    time_column: str
    count_sql: str
    # Raw rows keep NULL for a missing tag, rollups ''.
    null_tags: bool


_RAW: Final = _ViolationSource("violations", "start_time_ms", "count(*)", True)


def _dimension_column(dimension: Dimension) -> str:
    return "device_id" if dimension is Dimension.DEVICE else dimension.value


def _filter_columns(filter_: ViolationFilter) -> set[str]:
    named = {"device_id": filter_.device_ids, "type": filter_.types, "severity": filter_.severities,
             **filter_.tag_values()}
    return {column for column, values in named.items() if values}


def _violation_source(
    columns: set[str], from_ms: int, to_ms: int, bucket: Bucket | None = None
) -> _ViolationSource:
    """The smallest rollup with every column whose buckets tile [from_ms, to_ms) and `bucket`, else the raw
    table."""
    finest_ms = buckets.DAY_MS if bucket in (Bucket.DAY, Bucket.WEEK, Bucket.MONTH) else buckets.HOUR_MS
    for rollup in _ROLLUPS:
        if bucket is not None and rollup.size_ms > finest_ms:
            continue
        if columns <= set(rollup.dims) and from_ms % rollup.size_ms == 0 and to_ms % rollup.size_ms == 0:
            return _ViolationSource(rollup.table, rollup.time_column, "sum(count)", False)
    return _RAW


def _group_column(source: _ViolationSource, dimension: Dimension) -> str:
    column = _dimension_column(dimension)
    return f"coalesce({column}, '')" if source.null_tags else column


def _filter_violations(where: _Where, source: _ViolationSource, filter_: ViolationFilter) -> None:
    if filter_.device_ids:
        where.one_of("device_id", filter_.device_ids, indexed=True)
    if filter_.types:
        where.one_of("type", filter_.types, indexed=not filter_.device_ids)
    if filter_.severities:
        where.one_of("severity", filter_.severities, indexed=False)
    for column, values in filter_.tag_values().items():
        if values:
            where.one_of(column, values, indexed=False)


def _bucket_sql(column: str, bucket: Bucket) -> str:
    """The bucket start of `column` (epoch ms) in SQL, equal to `buckets.floor_ms`."""
    if bucket is Bucket.MONTH:
        return f"CAST(strftime('%s', {column} / 1000, 'unixepoch', 'start of month') AS INTEGER) * 1000"
    size = buckets.FIXED_MS[bucket]
    offset = buckets.WEEK_OFFSET_MS if bucket is Bucket.WEEK else 0
    return f"(({column} - {offset}) / {size}) * {size} + {offset}"


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


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """Turn on WAL mode; returns the journal mode now in force.

    On a new file another process may be switching it at the same moment, and SQLite answers that
    with SQLITE_BUSY at once, without waiting through the busy timeout: so wait here, a little at a time.
    """
    deadline = time.monotonic() + SCHEMA_LOCK_WAIT_MS / 1000
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SqliteStore(Store):
    """The embedded store in the SQLite file at `path` (created, with its parent directories, if missing)."""

    def __init__(self, path: pathlib.Path, retention: RetentionPolicy | None = None) -> None:
        self.path = pathlib.Path(path)
        # None: keep everything (apply_retention does nothing).
        self.retention = retention
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers: set[sqlite3.Connection] = set()
        self._closed = False
        self._checkpointer: _WalCheckpointer | None = None
        self._writer = self._connect()
        try:
            self._init_writer()
        except BaseException:
            self._writer.close()
            raise

    @classmethod
    def in_directory(cls, data_dir: pathlib.Path, retention: RetentionPolicy | None = None) -> SqliteStore:
        return cls(pathlib.Path(data_dir) / FILE_NAME, retention)

    # -- connections ---------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the sqlite3 module never opens transactions on its own; this class does.
        # check_same_thread=False: close() may run on a thread other than the one that used a connection;
        # each connection is still used by one thread at a time (the write lock, the reader pool).
        # timeout: the busy timeout, for the rare moments a WAL reader must wait (e.g. WAL recovery).
        return sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)

    def _init_writer(self) -> None:
        conn = self._writer
        mode = _switch_to_wal(conn)
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
        # stays below ~80 MB. Until start(): from then on the checkpointer's thread does it.
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_RESTART_PAGES}")
        # The version is read inside the write transaction: another process opening the same new file at
        # the same moment waits here for the schema instead of creating it a second time. A migration
        # of a large file can hold the lock for a while, hence the longer wait for this step only.
        conn.execute(f"PRAGMA busy_timeout={SCHEMA_LOCK_WAIT_MS}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version in (0, 1, 2, 3):
                if version < 3:
                    if version < 2:
                        # Splitting on ";" would cut the trigger bodies: statement by statement.
                        for statement in _statements(_SCHEMA if version == 0 else ""):
                            conn.execute(statement)
                        for statement in _statements(_MIGRATION_V2):
                            conn.execute(statement)
                        for rollup in _ROLLUPS:
                            for statement in [*rollup.schema(), rollup.backfill()]:
                                conn.execute(statement)
                    conn.execute(_MIGRATION_V3_COLUMN)
                    _backfill_dead_letter_ids(conn)
                    for statement in _statements(_MIGRATION_V3_INDEX):
                        conn.execute(statement)
                for statement in _statements(_MIGRATION_V4):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: schema version {version}, this citywatch understands {SCHEMA_VERSION}"
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute(_PREDICTIONS_SCHEMA)
        for statement in _EXPOSURES_SCHEMA:
            conn.execute(statement)
        self._create_exposure_rollup(conn)
        for statement in _WRITER_TEMP_TABLES:
            conn.execute(statement)

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
        if rows:
            self._write_with(lambda conn: conn.executemany(sql, rows))

    def _write_with(self, work: Callable[[sqlite3.Connection], object]) -> None:
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
                work(conn)
            except BaseException:
                # Some errors (disk full, I/O) already rolled the whole transaction back.
                if conn.in_transaction:
                    conn.execute("ROLLBACK TO write_batch")
                    conn.execute("RELEASE write_batch")
                raise
            conn.execute("RELEASE write_batch")

    # -- writes --------------------------------------------------------------------------------------------

    def write_events(self, events: Sequence[Event]) -> None:
        if events:
            self._write_with(lambda conn: self._insert_events(conn, events))

    def _insert_events(self, conn: sqlite3.Connection, events: Sequence[Event]) -> None:
        # Only events not stored yet feed the rollups (the first delivery wins, as the INSERT's DO NOTHING).
        unique = {e.event_id: e for e in reversed(events)}
        conn.execute("DELETE FROM temp.batch_events")
        conn.execute(_FILL_BATCH_EVENTS, (_encode_json([e for e in events if unique[e.event_id] is e]),))
        # Redeliveries are rare: insert first, and only when some rows were already stored (the insert
        # changed fewer rows than it was given) undo it, drop those from the batch and insert again.
        # Looking every batch's ids up first cost about a quarter of the store's time per event.
        conn.execute("SAVEPOINT new_events")
        before = conn.total_changes
        conn.execute(_INSERT_EVENTS)
        if conn.total_changes - before != len(unique):
            conn.execute("ROLLBACK TO new_events")
            conn.execute("DELETE FROM temp.batch_events WHERE event_id IN (SELECT event_id FROM main.events)")
            conn.execute(_INSERT_EVENTS)
        conn.execute("RELEASE new_events")
        conn.execute(_UPSERT_READING_STATS)
        conn.execute(_UPSERT_LATEST_READINGS)
        conn.execute("DELETE FROM temp.batch_events")

    def write_violations(self, violations: Sequence[Violation]) -> None:
        if violations:
            self._write_with(lambda conn: self._upsert_violations(conn, violations))

    def _upsert_violations(self, conn: sqlite3.Connection, violations: Sequence[Violation]) -> None:
        batch = _encode_json(violations)
        # A violation is counted once, by its first stored state: counted before the batch is stored.
        conn.execute("DELETE FROM temp.new_violations")
        conn.execute(_FILL_NEW_VIOLATIONS, (batch,))
        for rollup in _ROLLUPS:
            conn.execute(rollup.count_new())
        conn.execute("DELETE FROM temp.new_violations")
        conn.execute(_UPSERT_VIOLATIONS, (batch,))
        conn.execute(_INSERT_RULE_CHANGES, (_encode_json([rule_change(v) for v in violations]),))

    def write_dead_letters(self, dead_letters: Sequence[DeadLetter]) -> None:
        self._write(
            _INSERT_DEAD_LETTER,
            [(d.reason, d.detail, d.topic, d.payload, d.received_time_ms, d.source, d.dead_letter_id)
             for d in dead_letters],
        )

    def write_predictions(self, predictions: Sequence[Prediction]) -> None:
        if predictions:
            batch = _encode_json(predictions)
            self._write_with(lambda conn: conn.execute(_UPSERT_PREDICTIONS, (batch,)))

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

    def write_exposures(self, totals: Sequence[ExposureTotal]) -> None:
        self._write(_UPSERT_EXPOSURE, [
            (t.day, t.device_id, t.counter, float(t.value), t.tags.get("intersection", ""),
             t.tags.get("grid", ""), t.tags.get("district", ""))
            for t in totals])

    def exposure_sums(self, query: ExposureQuery) -> list[ExposureSum]:
        column = _EXPOSURE_PLACE_COLUMNS.get(query.group_by)
        if column is None:
            raise ValueError(f"exposures cannot be grouped by {query.group_by!r}; "
                             f"one of {', '.join(_EXPOSURE_PLACE_COLUMNS)}")
        # Whole months from their sums (not per device); the days left at either end from the totals.
        months, day_ranges = (_whole_months(query.first_day, query.last_day)
                              if query.group_by in _EXPOSURE_ROLLUP_KINDS
                              else ([], [(query.first_day, query.last_day)]))
        counters = f" AND counter IN ({_placeholders(len(query.counters))})" if query.counters else ""
        parts: list[str] = []
        params: list[Any] = []
        placed = "" if query.group_by in ("device", "city") else f" AND {column} != ''"
        if months:
            parts.append(f"SELECT {column} AS place, counter, ticks FROM exposure_month_sums "
                         f"WHERE month IN ({_placeholders(len(months))}){counters}{placed}")
            params += [*months, *query.counters]
        if day_ranges:
            where = " OR ".join("day BETWEEN ? AND ?" for _ in day_ranges)
            parts.append(f"SELECT {column} AS place, counter, round(value * {_TICKS_PER_UNIT}) AS ticks "
                         f"FROM exposure_totals "
                         f"WHERE ({where}){counters}{placed}")
            params += [day for day_range in day_ranges for day in day_range] + list(query.counters)
        if not parts:
            return []
        # A place whose devices all moved away keeps a sum of exactly zero: not a place of this range.
        rows = self._read(f"SELECT place, counter, sum(ticks) FROM ({' UNION ALL '.join(parts)}) "
                          f"GROUP BY 1, 2 HAVING sum(ticks) != 0 ORDER BY 1, 2", params)
        return [ExposureSum(place=row[0], counter=row[1], value=row[2] / _TICKS_PER_UNIT) for row in rows]

    @staticmethod
    def _create_exposure_rollup(conn: sqlite3.Connection) -> None:
        """The month sums and their triggers, filled from the totals already stored when first created
        (in one transaction, so two processes opening the file together fill it once)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                  "AND name = 'exposure_month_sums'").fetchone() is not None
            conn.execute(_EXPOSURE_ROLLUP_TABLE)
            if not exists:
                for statement in _EXPOSURE_ROLLUP_BACKFILL:
                    conn.execute(statement)
            for statement in _EXPOSURE_ROLLUP_TRIGGERS:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def flush(self) -> None:
        with self._write_lock:
            if self._closed:
                raise StoreClosed(f"{self.path}: store is closed")
            if self._writer.in_transaction:
                self._writer.execute("COMMIT")
                checkpointer = self._checkpointer
                if checkpointer is not None:
                    checkpointer.committed()

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
        items = [_event_from_row(row) for row in rows[:limit]]
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
        if query.severities:
            where.one_of("severity", query.severities, indexed=False)
        for column, values in query.filter().tag_values().items():
            if values:
                where.one_of(column, values, indexed=False)
        if query.bbox is not None:
            box = query.bbox
            where.terms.append("lat BETWEEN ? AND ? AND lon BETWEEN ? AND ?")
            where.params.extend((box.min_lat, box.max_lat, box.min_lon, box.max_lon))
        if query.open_at_ms is not None:
            where.terms.append("start_time_ms <= ? AND (end_time_ms IS NULL OR end_time_ms > ?)")
            where.params.extend((query.open_at_ms, query.open_at_ms))
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

    def violation_history(self, violation_id: str) -> list[LifecycleEntry]:
        rows = self._read(
            "SELECT change, time_ms, actor FROM violation_history WHERE violation_id = ?", [violation_id]
        )
        return history_order([
            LifecycleEntry(violation_id=violation_id, change=LifecycleChange(change), time_ms=time_ms,
                           actor=actor)
            for change, time_ms, actor in rows
        ])

    @staticmethod
    def _violation_from_row(row: tuple[Any, ...]) -> Violation:
        (violation_id, type_, severity, device_id, status, start_time_ms, end_time_ms, updated_time_ms,
         lat, lon, evidence, tags, detected_time_ms) = row
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
            detected_time_ms=detected_time_ms,
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
                dead_letter_id=letter_id,
            )
            for (_id, reason, detail, topic, payload, received_time_ms, source, letter_id) in rows[:limit]
        ]
        next_cursor = None
        if len(rows) > limit:
            last_row = rows[limit - 1]
            next_cursor = encode_cursor(last_row[5], str(last_row[0]))
        return Page(items, next_cursor)

    def count_dead_letters_by_reason(self) -> dict[str, int]:
        return dict(self._read("SELECT reason, count(*) FROM dead_letters GROUP BY reason"))

    # -- control-centre queries -----------------------------------------------------------------------------

    def count_violations(self, query: ViolationCountQuery) -> list[CountRow]:
        from_ms, to_ms = buckets.widen(query.from_ms, query.to_ms, query.bucket)
        columns = {_dimension_column(d) for d in query.group_by} | _filter_columns(query.filter)
        # Minute buckets are finer than every rollup: they always count raw rows.
        source = (_RAW if query.bucket is Bucket.MINUTE
                  else _violation_source(columns, from_ms, to_ms, query.bucket))
        group_columns = [_group_column(source, d) for d in query.group_by]
        where = _Where()
        _filter_violations(where, source, query.filter)
        where.time_window(source.time_column, from_ms, to_ms)
        bucket_sql = _bucket_sql(source.time_column, query.bucket)
        select = ", ".join([bucket_sql, *group_columns, source.count_sql])
        grouping = ", ".join(str(i + 1) for i in range(1 + len(group_columns)))
        rows = self._read(
            f"SELECT {select} FROM {source.table} {where.sql()} GROUP BY {grouping} ORDER BY {grouping} "
            "LIMIT ?",
            [*where.params, MAX_RESULT_ROWS + 1],
        )
        if len(rows) > MAX_RESULT_ROWS:
            raise QueryTooLarge(f"more than {MAX_RESULT_ROWS} rows: use a larger bucket or fewer groups")
        return [CountRow(row[0], tuple(row[1:-1]), row[-1]) for row in rows]

    def top_violations(self, query: TopQuery) -> list[TopRow]:
        _check_limit(query.limit)
        columns = {_dimension_column(query.dimension)} | _filter_columns(query.filter)
        source = _violation_source(columns, query.from_ms, query.to_ms)
        column = _group_column(source, query.dimension)
        where = _Where()
        _filter_violations(where, source, query.filter)
        where.time_window(source.time_column, query.from_ms, query.to_ms)
        where.terms.append(f"{column} != ''")
        rows = self._read(
            f"SELECT {column}, {source.count_sql} AS n FROM {source.table} {where.sql()} "
            f"GROUP BY 1 ORDER BY n DESC, 1 ASC LIMIT ?",
            [*where.params, query.limit],
        )
        return [TopRow(key, count) for key, count in rows]

    def reading_series(self, query: ReadingSeriesQuery) -> ReadingSeries:
        limit = _check_limit(query.limit)
        if query.bucket is None:
            rows = self._read(
                "SELECT event_time_ms, value FROM ("
                "  SELECT event_time_ms, event_id, json_extract(attributes, ?) AS value,"
                "         json_type(attributes, ?) AS value_type"
                "  FROM events WHERE device_id = ? AND event_time_ms >= ? AND event_time_ms < ?)"
                " WHERE value_type IN ('integer', 'real') ORDER BY event_time_ms, event_id LIMIT ?",
                [*[_json_path(query.attribute)] * 2, query.device_id, query.from_ms, query.to_ms, limit + 1],
            )
            points = [ReadingPoint(t, float(v)) for t, v in rows[:limit]]
            return ReadingSeries(points=points, buckets=[], truncated=len(rows) > limit)
        from_ms, to_ms = buckets.widen(query.from_ms, query.to_ms, query.bucket)
        if query.bucket is Bucket.MINUTE:
            rows = self._read(
                f"SELECT {_bucket_sql('event_time_ms', Bucket.MINUTE)}, count(*), avg(value), min(value),"
                "       max(value) FROM ("
                "  SELECT event_time_ms, json_extract(attributes, ?) AS value, json_type(attributes, ?) AS vt"
                "  FROM events WHERE device_id = ? AND event_time_ms >= ? AND event_time_ms < ?)"
                " WHERE vt IN ('integer', 'real') GROUP BY 1 ORDER BY 1 LIMIT ?",
                [*[_json_path(query.attribute)] * 2, query.device_id, from_ms, to_ms, limit + 1],
            )
        else:
            rows = self._read(
                f"SELECT {_bucket_sql('hour_ms', query.bucket)}, sum(count), sum(sum_value) / sum(count),"
                "       min(min_value), max(max_value)"
                " FROM reading_stats_hourly WHERE device_id = ? AND attribute = ? AND hour_ms >= ?"
                " AND hour_ms < ? GROUP BY 1 ORDER BY 1 LIMIT ?",
                [query.device_id, query.attribute, from_ms, to_ms, limit + 1],
            )
        found = [ReadingBucket(t, n, float(mean), float(low), float(high)) for t, n, mean, low, high in rows]
        return ReadingSeries(points=[], buckets=found[:limit], truncated=len(rows) > limit)

    def latest_readings(self, query: LatestReadingsQuery) -> Page[Event]:
        limit = _check_limit(query.limit)
        where = _Where()
        where.equals("kind", query.kind, indexed=True)
        if query.attribute is not None:
            where.terms.append("json_type(attributes, ?) IS NOT NULL")
            where.params.append(_json_path(query.attribute))
        if query.cursor is not None:
            where.terms.append("device_id > ?")
            where.params.append(query.cursor)
        rows = self._read(
            f"SELECT {_EVENT_COLUMNS} FROM latest_readings {where.sql()} ORDER BY device_id LIMIT ?",
            [*where.params, limit + 1],
        )
        items = [_event_from_row(row) for row in rows[:limit]]
        return Page(items, items[-1].device_id if len(rows) > limit else None)

    def apply_retention(self, now_ms: int) -> None:
        if self.retention is None:
            return
        day = buckets.DAY_MS
        policy = self.retention
        raw_before = now_ms - policy.raw_readings_days * day
        rollup_before = now_ms - policy.rollup_days * day
        violations_before = now_ms - policy.violations_days * day
        deletes = [
            ("DELETE FROM events WHERE event_time_ms < ?", raw_before),
            ("DELETE FROM latest_readings WHERE event_time_ms < ?", rollup_before),
            ("DELETE FROM reading_stats_hourly WHERE hour_ms < ?", rollup_before),
            *((f"DELETE FROM {r.table} WHERE {r.time_column} < ?", rollup_before) for r in _ROLLUPS),
            # A violation's history goes with it (first: it is found by the violations to delete).
            ("DELETE FROM violation_history WHERE violation_id IN "
             "(SELECT violation_id FROM violations WHERE start_time_ms < ?)", violations_before),
            ("DELETE FROM violations WHERE start_time_ms < ?", violations_before),
            ("DELETE FROM dead_letters WHERE received_time_ms < ?", now_ms - policy.dead_letters_days * day),
        ]
        for sql, before in deletes:
            self._write(sql, [(before,)])
        self.flush()

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Checkpoint on a thread of its own from now on, instead of in the commits (see _WalCheckpointer)."""
        with self._write_lock:
            if self._closed:
                raise StoreClosed(f"{self.path}: store is closed")
            if self._checkpointer is not None:
                return
            self._checkpointer = _WalCheckpointer(self._connect, self._writer, self._write_lock,
                                                  restart_pages=WAL_RESTART_PAGES,
                                                  interval_s=CHECKPOINT_INTERVAL_S)
            self._writer.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer.start()

    def ping(self) -> None:
        # Touches the file (a read transaction on the schema), unlike a bare `SELECT 1`.
        self._read("SELECT count(*) FROM sqlite_schema")

    def close(self) -> None:
        """Commit what is pending (a clean stop loses nothing), then close every connection. Idempotent.
        Closing the last connection copies the whole WAL into the database file (SQLite does that)."""
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()  # before the lock: a checkpoint in progress may be holding it
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
