"""The evaluation fields of every case, kept in memory as numpy columns and brought up to date from the
rows changed since the last look.

Evaluating a year of a city's cases (1,000,000) must answer in under a second, and reading a million rows
through a database driver alone takes longer. So the case store numbers its writes: every insert and
update of a case sets `change_seq` to the next number, under the transaction's exclusive lock on the
cases (so a number becomes visible only after every smaller one), and every case has a dense
`row_number` from its insert. This cache reads all rows once, then only those with a larger `change_seq`
than it has seen, and overwrites their places; cases are never deleted. Each api replica keeps its own
copy; what another replica wrote is read at the next evaluation like any other change.

Reading a million rows takes seconds, so the first read of a process is made short by a snapshot: the
columns, their group names and the last write number they include (the high-water mark), kept in one row
of `case_column_snapshot` in the same database (shared by every replica on PostgreSQL). A process starts
from the snapshot and reads only the rows written after its mark; `checkpoint` writes a newer snapshot
once enough has changed since the last one. The snapshot is a cache: a missing, older-format or stale
one only makes the first read longer, never the figures different, since rows are read by write number
and every later write of a case overwrites its place.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from processors.cases.evaluation import NEVER_MS, CaseColumns
from store.relational import Database, PostgresDatabase

_LEVELS: Final = ("department", "grid", "district")
# The integers of a row, in this order; a suspension not running has `suspended_since` -1.
_NUMBERS: Final = ("row_number", "change_seq", "registered", "deadline", "closed", "reworked", "returned",
                   "suspended_ms", "suspended_since", "suspended_now")
_NUMBER_SQL: Final = (
    "row_number", "change_seq", "created_time_ms", f"COALESCE(deadline_ms, {NEVER_MS})",
    f"COALESCE(closed_time_ms, {NEVER_MS})", "reworked", "returns", "suspended_ms",
    "COALESCE(suspended_since_ms, -1)", "CASE WHEN state = 'suspended' THEN 1 ELSE 0 END")
_KEPT: Final = _NUMBERS[2:] + _LEVELS
Int64s = npt.NDArray[np.int64]
log = logging.getLogger(__name__)
# The snapshot's layout; a snapshot of another format is ignored (the first read then reads every row).
SNAPSHOT_FORMAT: Final = 1
# Stored narrower than in memory (counts and group codes fit 32 bits, the flag 8): a smaller row to read.
_NARROW: Final = {"reworked": np.int32, "returned": np.int32, "suspended_now": np.int8,
                  "department": np.int32, "grid": np.int32, "district": np.int32}


class EvaluationColumns:
    def __init__(self, database: Database) -> None:
        self._db = database
        self._lock = threading.Lock()
        self._seen_seq = 0
        self._present = np.zeros(0, dtype=bool)
        self._columns: dict[str, Int64s] = {name: np.zeros(0, dtype=np.int64) for name in _KEPT}
        self._codes: dict[str, dict[str, int]] = {level: {} for level in _LEVELS}
        self._started = False
        self._snapshot_seq = 0  # the mark of the newest snapshot this process read or wrote

    def warm(self) -> None:
        """Read the cases now (the snapshot and what changed since, or every row when there is no
        snapshot), so that the first evaluation asked for is fast."""
        with self._lock:
            self._refresh()

    def checkpoint(self, min_changes: int) -> bool:
        """Bring the columns up to date and, when at least `min_changes` writes were read since the newest
        snapshot this process knows of (or there is none), store a new one; whether one was stored. A
        snapshot another replica stored meanwhile, as new or newer, is kept."""
        with self._lock:
            self._refresh()
            if self._seen_seq - self._snapshot_seq < min_changes or self._seen_seq == 0:
                return False
            seen_seq, present = self._seen_seq, self._present.copy()
            columns = {name: column.copy() for name, column in self._columns.items()}
            names = {level: list(codes) for level, codes in self._codes.items()}
        # Serialised outside the lock (evaluations go on meanwhile): the arrays' bytes one after the other,
        # little-endian, their names and types in the layout, so that a load is one copy per column.
        arrays = {"present": present.astype("<i1"),
                  **{name: column.astype(np.dtype(_NARROW.get(name, np.int64)).newbyteorder("<"))
                     for name, column in columns.items()}}
        layout = {"names": names, "rows": len(present),
                  "columns": [[name, array.dtype.str] for name, array in arrays.items()]}
        blob = b"".join(array.tobytes() for array in arrays.values())
        stored = self._db.execute(
            "INSERT INTO case_column_snapshot (id, format, seen_seq, layout, columns) VALUES (1, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET format = excluded.format, seen_seq = excluded.seen_seq, "
            "layout = excluded.layout, columns = excluded.columns "
            "WHERE case_column_snapshot.seen_seq < excluded.seen_seq OR case_column_snapshot.format <> ?",
            (SNAPSHOT_FORMAT, seen_seq, json.dumps(layout), blob, SNAPSHOT_FORMAT)).rowcount == 1
        with self._lock:
            self._snapshot_seq = max(self._snapshot_seq, seen_seq)
        return stored

    def _load_snapshot(self) -> None:
        """Start from the stored snapshot, if there is one of this format (its fields read in one
        statement: another replica may replace it meanwhile)."""
        sql = "SELECT format, seen_seq, layout, columns FROM case_column_snapshot WHERE id = 1"
        if isinstance(self._db, PostgresDatabase):
            # Binary copy: the large field as raw bytes, not a text encoding of them.
            fields = _binary_copy_row(self._db.copy_out(sql))
            if fields is None:
                return
            snapshot_format = int.from_bytes(fields[0], "big", signed=True)
            seen_seq = int.from_bytes(fields[1], "big", signed=True)
            layout_text, blob = bytes(fields[2]).decode(), fields[3]
        else:
            row = self._db.execute(sql).one()
            if row is None:
                return
            snapshot_format, seen_seq, layout_text, blob = int(row[0]), int(row[1]), row[2], row[3]
        if snapshot_format != SNAPSHOT_FORMAT:
            return
        try:
            layout = json.loads(layout_text)
            rows, arrays, offset = int(layout["rows"]), {}, 0
            for name, dtype_text in layout["columns"]:
                dtype = np.dtype(dtype_text)
                arrays[name] = np.frombuffer(blob, dtype=dtype, count=rows, offset=offset)
                offset += rows * dtype.itemsize
            present = arrays["present"].astype(bool)  # copies: the columns are written in place later
            columns = {name: arrays[name].astype(np.int64) for name in _KEPT}
            codes = {level: {name: code for code, name in enumerate(layout["names"][level])}
                     for level in _LEVELS}
        except (ValueError, KeyError, TypeError) as exc:  # a cache: without it, every row is read
            log.warning("cases: the evaluation snapshot could not be read (%s); reading every case", exc)
            return
        self._present, self._columns, self._codes = present, columns, codes
        self._seen_seq = self._snapshot_seq = seen_seq

    def columns(self, from_ms: int, to_ms: int, now_ms: int) -> CaseColumns:
        """The cases registered in [from_ms, to_ms) or open at `to_ms`, as they are in the store now; a
        suspension still running counts up to `now_ms` in the time suspended."""
        with self._lock:
            self._refresh()
            c = self._columns
            registered, closed = c["registered"], c["closed"]
            chosen = self._present & (registered < to_ms) & (
                (registered >= from_ms) | (closed == NEVER_MS) | (closed >= to_ms))
            since = c["suspended_since"][chosen]
            running = np.where(since >= 0, now_ms - since, 0)
            return CaseColumns(
                registered_ms=registered[chosen], deadline_ms=c["deadline"][chosen], closed_ms=closed[chosen],
                reworked=c["reworked"][chosen], returned=c["returned"][chosen],
                suspended_ms=c["suspended_ms"][chosen] + running,
                suspended_now=c["suspended_now"][chosen].astype(bool), department=c["department"][chosen],
                grid=c["grid"][chosen], district=c["district"][chosen],
                names={level: tuple(self._codes[level]) for level in _LEVELS})

    def _refresh(self) -> None:
        if not self._started:
            self._load_snapshot()
            self._started = True  # only once it was read (or found missing): a failed read is tried again
        if self._seen_seq == 0 and isinstance(self._db, PostgresDatabase):
            self._apply(*self._postgres_copy())
        rows = self._db.execute(
            f"SELECT {', '.join(_NUMBER_SQL)}, COALESCE(department, ''), COALESCE(grid, ''), "
            "COALESCE(district, '') FROM cases WHERE change_seq > ?", (self._seen_seq,)).rows
        if not rows:
            return
        numbers = np.fromiter(itertools.chain.from_iterable(row[:len(_NUMBERS)] for row in rows),
                              dtype=np.int64, count=len(rows) * len(_NUMBERS)).reshape(len(rows), -1)
        codes = {level: self._coded(level, rows, len(_NUMBERS) + index)
                 for index, level in enumerate(_LEVELS)}
        self._apply(numbers, codes, int(numbers[:, 1].max()))

    def _apply(self, numbers: Int64s, codes: dict[str, Int64s], seen_seq: int) -> None:
        if len(numbers):
            rows_at = numbers[:, 0]
            self._grow(int(rows_at.max()) + 1)
            for index, name in enumerate(_NUMBERS[2:], start=2):
                self._columns[name][rows_at] = numbers[:, index]
            for level in _LEVELS:
                self._columns[level][rows_at] = codes[level]
            self._present[rows_at] = True
        self._seen_seq = max(self._seen_seq, seen_seq)

    def _coded(self, level: str, rows: Sequence[tuple[Any, ...]], index: int) -> Int64s:
        known = self._codes[level]
        return np.fromiter((known.setdefault(row[index], len(known)) for row in rows), dtype=np.int64,
                           count=len(rows))

    def _grow(self, size: int) -> None:
        if size <= len(self._present):
            return
        size = max(size, len(self._present) * 5 // 4)  # amortised: not a copy per new case
        self._present = np.concatenate([self._present, np.zeros(size - len(self._present), dtype=bool)])
        for name, column in self._columns.items():
            self._columns[name] = np.concatenate([column, np.zeros(size - len(column), dtype=np.int64)])

    def _postgres_copy(self) -> tuple[Int64s, dict[str, Int64s], int]:
        """The first read on PostgreSQL: integers only (names coded by joining the few distinct names),
        copied out in the binary format and read by numpy as fixed-size records. Only the rows written
        up to the last change before the names were read (the others come with the next read)."""
        assert isinstance(self._db, PostgresDatabase)
        last = self._db.execute("SELECT COALESCE(MAX(change_seq), 0) FROM cases").one()
        upto = int(last[0]) if last is not None else 0
        found = self._db.execute(
            "SELECT COALESCE(department, ''), COALESCE(grid, ''), COALESCE(district, ''), "
            "GROUPING(department), GROUPING(grid) FROM cases "
            "GROUP BY GROUPING SETS ((department), (grid), (district))").rows
        for department, grid, district, no_department, no_grid in found:
            level = "department" if not no_department else "grid" if not no_grid else "district"
            name = {"department": department, "grid": grid, "district": district}[level]
            self._codes[level].setdefault(name, len(self._codes[level]))  # NULL and '' are one name
        aliases = {"department": "dn", "grid": "gn", "district": "sn"}
        joins = " ".join(f"JOIN unnest(?::text[]) WITH ORDINALITY AS {alias}(name, code) "
                         f"ON {alias}.name = COALESCE(c.{level}, '')" for level, alias in aliases.items())
        fields = [f"CAST({expression} AS BIGINT)" for expression in _NUMBER_SQL] + [
            f"CAST({alias}.code - 1 AS BIGINT)" for alias in aliases.values()]
        names = [list(self._codes[level]) for level in _LEVELS]
        data = self._db.copy_out(f"SELECT {', '.join(fields)} FROM cases c {joins} WHERE change_seq <= ?",
                                 (*names, upto))
        record = np.dtype([("count", ">i2"), *((f"f{i}", [("size", ">i4"), ("value", ">i8")])
                                               for i in range(len(fields)))])
        # 19 bytes of header (signature, flags, no extension), then the records, then a 2-byte trailer.
        table = np.frombuffer(data, dtype=record, offset=19, count=(len(data) - 21) // record.itemsize)
        values = np.stack([table[f"f{i}"]["value"].astype(np.int64) for i in range(len(fields))], axis=1)
        numbers = values[:, :len(_NUMBERS)]
        codes = {level: values[:, len(_NUMBERS) + index] for index, level in enumerate(_LEVELS)}
        return numbers, codes, upto


def _binary_copy_row(data: bytes) -> list[memoryview] | None:
    """The fields of the one row of a PostgreSQL binary COPY (19 bytes of header, then per row a 2-byte
    field count and each field as a 4-byte length and its bytes; -1 is NULL), or None without a row."""
    view = memoryview(data)
    count = int.from_bytes(view[19:21], "big", signed=True)
    if count < 0:  # the trailer (-1): no row
        return None
    fields, at = [], 21
    for _ in range(count):
        length = int.from_bytes(view[at:at + 4], "big", signed=True)
        at += 4
        fields.append(view[at:at + max(0, length)])
        at += max(0, length)
    return fields
