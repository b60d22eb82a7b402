"""The InfluxDB store: line protocol in (buffered, see store/influx_writer.py), InfluxQL out.

Writes go through the v1 `/write` endpoint or influxdb-client's v2 write API; every query is InfluxQL over
`/query`, which InfluxDB 1.x, 2.x (with a DBRP mapping) and 3.x answer. The measurement and tag design is
in docs/store-influxdb.md. Results are shaped and ordered in Python exactly as the embedded store orders
them, so both backends give the same answers.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import msgspec
import urllib3

from core.metrics import Metrics
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
    history_order,
)
from core.redaction import redact_url, redact_urls
from core.settings import InfluxApi, InfluxDBSettings
from store import buckets
from store import influx_counts as counts
from store import influx_exposures as exposures
from store import influx_lines as lines
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
    StoreUnavailable,
    TopQuery,
    TopRow,
    ViolationCountQuery,
    ViolationFilter,
    ViolationQuery,
    decode_cursor,
    encode_cursor,
)
from store.influx_writer import BufferedWriter, Transport, V1Transport, V2Transport

log = logging.getLogger(__name__)

# Retention policies (v1) / bucket suffixes: raw readings, violations and dead letters, hourly rollups.
RP_RAW: Final = "raw"
RP_VIOLATIONS: Final = "violations"
RP_ROLLUP: Final = "rollup"

NS_PER_MS: Final = 1_000_000
# Records whose lines are built and handed to the writer at a time: the writer sends one slice while the
# next is built (InfluxDB parses on the other core), instead of sending only once the whole write is built.
WRITE_SLICE: Final = 1000
# Rows fetched per InfluxQL request when a page is assembled in Python.
SCAN_CHUNK: Final = 5000
MAX_RESULT_ROWS: Final = 50_000

_decode_evidence = msgspec.json.Decoder(Evidence).decode
_decode_tags = msgspec.json.Decoder(dict[str, str]).decode
_decode_attributes = msgspec.json.Decoder(dict[str, Any]).decode

_TAG_OF_DIMENSION: Final = {Dimension.DEVICE: "device"}


class InfluxQueryError(RuntimeError):
    """InfluxDB answered a query with an error, or could not be reached."""


class InfluxUnavailable(StoreUnavailable, InfluxQueryError):
    """InfluxDB could not be reached (refused, reset, timed out) or answered with a server error (5xx).

    StoreUnavailable first: the API answers it as an outage (503), before the query errors (500)."""


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tag(dimension: Dimension) -> str:
    return _TAG_OF_DIMENSION.get(dimension, dimension.value)


class _Conditions:
    def __init__(self) -> None:
        self.terms: list[str] = []

    def one_of(self, tag: str, values: Iterable[str]) -> None:
        values = list(values)
        if values:
            self.terms.append(
                "(" + " OR ".join(f"{quote_ident(tag)} = {quote_string(v)}" for v in values) + ")"
            )

    def time_range_ns(self, from_ns: int | None, to_ns: int | None) -> None:
        if from_ns is not None:
            self.terms.append(f"time >= {from_ns}")
        if to_ns is not None:
            self.terms.append(f"time < {to_ns}")

    def add(self, term: str) -> None:
        self.terms.append(term)

    def sql(self, *extra: str) -> str:
        terms = [*self.terms, *extra]
        return f" WHERE {' AND '.join(terms)}" if terms else ""


def _violation_conditions(filter_: ViolationFilter) -> _Conditions:
    where = _Conditions()
    where.one_of("type", filter_.types)
    where.one_of("device", filter_.device_ids)
    where.one_of("severity", filter_.severities)
    for tag, values in filter_.tag_values().items():
        where.one_of(tag, values)
    return where


def _filter_tags(filter_: ViolationFilter) -> set[str]:
    return set(_filter_values(filter_))


def _filter_values(filter_: ViolationFilter) -> dict[str, tuple[str, ...]]:
    """The values each filtered tag may have (tags not filtered are left out)."""
    named = {
        "type": filter_.types,
        "device": filter_.device_ids,
        "severity": filter_.severities,
        **filter_.tag_values(),
    }
    return {tag: values for tag, values in named.items() if values}


def _ms(ns: int) -> int:
    return ns // NS_PER_MS


def _ms_to_ns(ms: int | None) -> int | None:
    return None if ms is None else ms * NS_PER_MS


class InfluxStore(Store):
    def __init__(
        self,
        settings: InfluxDBSettings,
        data_dir: Path,
        retention: RetentionPolicy,
        *,
        metrics: Metrics | None = None,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings
        self.retention = retention
        self.metrics = metrics or Metrics()
        self.now_ms = now_ms or (lambda: time.time_ns() // NS_PER_MS)
        self.url = settings.url.rstrip("/")
        self.database = settings.database
        self._http = urllib3.PoolManager(maxsize=8)
        self._api: InfluxApi | None = None if settings.api is InfluxApi.AUTO else settings.api
        self._schema_ready = False
        self._writer = BufferedWriter(
            _LazyTransport(self),
            Path(data_dir) / "influx-spool",
            batch_points=settings.batch_points,
            memory_points=settings.memory_buffer_points,
            disk_bytes=settings.disk_buffer_bytes,
            flush_interval_s=settings.flush_interval_ms / 1000,
            flush_wait_s=settings.flush_wait_s,
            backpressure_timeout_s=settings.backpressure_timeout_s,
            retry_min_s=settings.retry_min_s,
            retry_max_s=settings.retry_max_s,
            metrics=self.metrics,
        )
        # Hours of readings written since their rollup was last computed, with the attributes seen.
        self._dirty_hours: dict[int, set[str]] = defaultdict(set)
        self._dirty_lock = threading.Lock()
        # Set once this process saw that every hour holding violations has a mark (influx_counts).
        self._marks_complete = False
        self._maintenance_stop = threading.Event()
        self._maintenance: threading.Thread | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start sending and the rollup thread; if InfluxDB is down, writes wait in the buffer."""
        self._writer.start()
        self._maintenance = threading.Thread(
            target=self._maintain, name="citywatch-influx-rollups", daemon=True
        )
        self._maintenance.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._maintenance_stop.set()
        if self._maintenance is not None:
            self._maintenance.join(30)
        self._writer.stop()
        self._http.clear()

    def ping(self) -> None:
        response = self._request("GET", "/ping")
        if response.status != 204:
            raise InfluxQueryError(f"InfluxDB /ping answered HTTP {response.status}")
        if self._writer.last_error is not None:
            memory, disk = self._writer.backlog()
            raise InfluxQueryError(
                f"writes failing ({memory} points buffered, {disk} bytes spooled): {self._writer.last_error}"
            )

    def backlog(self) -> tuple[int, int]:
        return self._writer.backlog()

    # -- HTTP -----------------------------------------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        s = self.settings
        if s.token is not None:
            return {"Authorization": f"Token {s.token.get_secret_value()}"}
        if s.username is not None:
            secret = s.password.get_secret_value() if s.password else ""
            return {"Authorization": "Basic " + base64.b64encode(f"{s.username}:{secret}".encode()).decode()}
        return {}

    def _request(self, method: str, path: str, fields: dict[str, str] | None = None) -> Any:
        url = f"{self.url}{path}"
        try:
            if method == "GET":
                return self._http.request(
                    "GET",
                    url + (f"?{urlencode(fields)}" if fields else ""),
                    headers=self._auth_headers(),
                    timeout=self.settings.timeout_s,
                    retries=False,
                )
            return self._http.request(
                "POST",
                url,
                body=urlencode(fields or {}),
                headers={**self._auth_headers(), "Content-Type": "application/x-www-form-urlencoded"},
                timeout=self.settings.timeout_s,
                retries=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise InfluxUnavailable(
                f"InfluxDB at {redact_url(self.url)} unreachable: {redact_urls(str(exc))}") from None

    def query(self, influxql: str, *, method: str = "GET") -> list[dict[str, Any]]:
        """The series of one InfluxQL statement (epoch ns times)."""
        return self._query_many([influxql], method=method)[0]

    def _query_many(self, statements: list[str], *, method: str = "GET") -> list[list[dict[str, Any]]]:
        """The series of each statement, asked in one request."""
        influxql = ";".join(statements)
        response = self._request(method, "/query", {"db": self.database, "q": influxql, "epoch": "ns"})
        if response.status != 200:
            error = InfluxUnavailable if response.status >= 500 else InfluxQueryError
            raise error(f"HTTP {response.status} for {influxql[:200]!r}: {response.data[:300]!r}")
        body = json.loads(response.data)
        if "error" in body:
            raise InfluxQueryError(f"{body['error']} in {influxql[:200]!r}")
        answers: list[list[dict[str, Any]]] = [[] for _ in statements]
        for result in body["results"]:
            if "error" in result:
                raise InfluxQueryError(f"{result['error']} in {influxql[:200]!r}")
            answers[result.get("statement_id", 0)] = result.get("series", [])
        return answers

    @staticmethod
    def _merge_rows(answer: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for series in answer:
            columns = series["columns"]
            tags = series.get("tags") or {}
            for values in series.get("values", []):
                row = dict(zip(columns, values, strict=True))
                row.update(tags)
                rows.append(row)
        return rows

    def _rows(self, influxql: str) -> list[dict[str, Any]]:
        """Rows as dicts (tags merged in), across all series of the answer."""
        return self._merge_rows(self.query(influxql))

    def api(self) -> InfluxApi:
        """The write API this server speaks (asked once from /ping's version header when set to auto)."""
        if self._api is None:
            response = self._request("GET", "/ping")
            version = response.headers.get("X-Influxdb-Version", "")
            self._api = _api_for_version(version)
            log.info(
                "InfluxDB %s at %s: writing with the %s API",
                version or "(unknown version)",
                redact_url(self.url),
                self._api.value,
            )
        return self._api

    def ensure_schema(self) -> None:
        """Create the database and retention policies (v1, when manage_schema is on). Idempotent."""
        if self._schema_ready or not self.settings.manage_schema or self.api() is not InfluxApi.V1:
            self._schema_ready = True
            return
        r = self.retention
        db = quote_ident(self.database)
        # Decided from what the server lists, never from the wording of its errors: CREATE DATABASE is
        # idempotent; a policy that exists is altered to the configured duration, a missing one created.
        self.query(f"CREATE DATABASE {db}", method="POST")
        existing = {row[0] for series in self.query(f"SHOW RETENTION POLICIES ON {db}")
                    for row in series.get("values", [])}
        for name, days, default in (
            (RP_RAW, r.raw_readings_days, True),
            (RP_VIOLATIONS, max(r.violations_days, r.dead_letters_days), False),
            (RP_ROLLUP, r.rollup_days, False),
        ):
            verb = "ALTER" if name in existing else "CREATE"
            statement = f"{verb} RETENTION POLICY {quote_ident(name)} ON {db} DURATION {days}d"
            statement += " REPLICATION 1" if verb == "CREATE" else ""
            self.query(statement + (" DEFAULT" if default else ""), method="POST")
        self._schema_ready = True

    def _measurement(self, rp: str, measurement: str) -> str:
        return f"{quote_ident(self.database)}.{quote_ident(rp)}.{quote_ident(measurement)}"

    # -- writes ---------------------------------------------------------------------------------------------

    def write_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        with self._dirty_lock:
            for event in events:
                self._dirty_hours[event.event_time_ms // buckets.HOUR_MS * buckets.HOUR_MS].update(
                    lines.numeric_attributes(event.attributes)
                )
        for first in range(0, len(events), WRITE_SLICE):
            self._writer.put(RP_RAW, lines.event_lines(events[first : first + WRITE_SLICE]))

    def write_violations(self, violations: Sequence[Violation]) -> None:
        if not violations:
            return
        # A violation state is three lines (influx_lines.violation_lines): a slice of them as long as an
        # event slice, so it too is sent at once (influx_writer.EAGER_SEND_POINTS).
        step = WRITE_SLICE // 3 + 1
        for first in range(0, len(violations), step):
            self._writer.put(RP_VIOLATIONS, lines.violation_lines(violations[first : first + step]))
        # After the points they mark: a reader that sees the mark sees the points (influx_counts).
        days = {v.start_time_ms - v.start_time_ms % buckets.DAY_MS for v in violations}
        self._writer.put(RP_VIOLATIONS, counts.mark_lines(days, random.getrandbits(62)))

    def write_dead_letters(self, dead_letters: Sequence[DeadLetter]) -> None:
        if dead_letters:
            self._writer.put(RP_VIOLATIONS, [lines.dead_letter_line(d) for d in dead_letters])

    def write_predictions(self, predictions: Sequence[Prediction]) -> None:
        if predictions:
            self._writer.put(RP_VIOLATIONS, [lines.prediction_line(p) for p in predictions])

    def query_predictions(self, type: str, limit: int = 1000) -> list[Prediction]:
        limit = _check_limit(limit)
        rows = self._rows(
            f"SELECT * FROM {self._measurement(RP_VIOLATIONS, lines.PREDICTIONS)} "
            f'WHERE "type" = {quote_string(type)} GROUP BY "device" ORDER BY time DESC LIMIT 1'
        )
        predictions = [_prediction_from_row(row) for row in rows]
        # Soonest first; devices without a forecast (no rising trend) last, as on the embedded store.
        predictions.sort(key=lambda p: (p.predicted_time_ms is None, p.predicted_time_ms or 0, p.device_id))
        return predictions[:limit]

    # Exposure totals: the measurement and its queries are in store/influx_exposures.py.
    def write_exposures(self, totals: Sequence[ExposureTotal]) -> None:
        if totals:
            self._writer.put(RP_ROLLUP, exposures.exposure_lines(totals))

    def exposure_sums(self, query: ExposureQuery) -> list[ExposureSum]:
        # Read before anything was written (at start-up, to resume counting): the database may not exist yet.
        self.ensure_schema()
        return exposures.exposure_sums(self._rows, self._measurement(RP_ROLLUP, exposures.EXPOSURES), query)

    def flush(self) -> None:
        """Everything written is acknowledged by InfluxDB or spooled to disk when this returns."""
        self._writer.flush()

    def wait_until_sent(self, timeout_s: float = 30.0) -> None:
        """Block until InfluxDB acknowledged everything (tests and benchmarks read their own writes)."""
        deadline = time.monotonic() + timeout_s
        self._writer.flush()
        while self._writer.backlog() != (0, 0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"InfluxDB backlog {self._writer.backlog()} after {timeout_s} s")
            self._writer._wake_sender.set()
            time.sleep(0.01)

    # -- rollups and retention ------------------------------------------------------------------------------

    def _maintain(self) -> None:
        while not self._maintenance_stop.wait(self.settings.rollup_interval_s):
            try:
                self.compute_rollups()
            except Exception as exc:  # InfluxDB down: the hours stay dirty and are tried again
                log.warning("hourly rollups not computed: %s", redact_urls(str(exc)))
            try:
                self.compute_violation_rollups()
            except Exception as exc:  # the marks stay, so the same days are tried again
                log.warning("violation count rollups not computed: %s", redact_urls(str(exc)))

    def _versions(
        self, rp: str, measurement: str, from_ms: int | None = None, to_ms: int | None = None
    ) -> str:
        where = _Conditions()
        where.time_range_ns(_ms_to_ns(from_ms), _ms_to_ns(to_ms))
        return f'SELECT "version" FROM {self._measurement(rp, measurement)}{where.sql()}'

    @staticmethod
    def _by_time(answer: list[dict[str, Any]]) -> dict[int, int]:
        return {_ms(r["time"]): int(r["version"]) for r in InfluxStore._merge_rows(answer)}

    def _mark_complete(self) -> bool:
        """Whether every day holding violations has a write mark (cached once it does)."""
        if not self._marks_complete:
            state = self.query(
                f'SELECT last("marked") FROM {self._measurement(RP_ROLLUP, counts.ROLLUP_STATE)}'
            )
            self._marks_complete = bool(state)
        return self._marks_complete

    def mark_unrolled_days(self) -> int:
        """Give every day that holds violations but no mark one (the violations of a database written
        before the count rollups existed), then record that the marks are complete; returns the days marked.

        Runs at the first rollup pass of a process until it succeeds once; queries count from the raw
        points until it has."""
        if self._mark_complete():
            return 0
        now_ms = self.now_ms()
        # InfluxDB refuses points older than a retention policy's duration: nothing older can be stored.
        kept_days = max(self.retention.violations_days, self.retention.dead_letters_days) + 1
        from_ms, to_ms = now_ms - kept_days * buckets.DAY_MS, now_ms + 366 * buckets.DAY_MS
        held, marks = self._query_many([
            f'SELECT count("violation_id") AS n FROM {self._measurement(RP_VIOLATIONS, lines.VIOLATIONS)} '
            f"WHERE time >= {from_ms * NS_PER_MS} AND time < {to_ms * NS_PER_MS} "
            "GROUP BY time(1d) fill(none)",
            self._versions(RP_VIOLATIONS, counts.WRITE_MARKS),
        ])
        marked = self._by_time(marks)
        unmarked = {_ms(r["time"]) for r in self._merge_rows(held) if r["n"]} - marked.keys()
        if unmarked:
            # Version 0: never one a write batch uses (those are random and almost never 0) nor a done one.
            self._writer.put(RP_VIOLATIONS, counts.mark_lines(unmarked, 0))
            log.info("violation count rollups: %d days written before them will be rolled up", len(unmarked))
        # After the marks (the writer sends in order): a reader that sees it sees them.
        self._writer.put(RP_ROLLUP, [counts.state_line(now_ms)])
        return len(unmarked)

    def compute_violation_rollups(self) -> int:
        """Recompute the count rollups of every day written since its last pass; returns the days
        recomputed. Exact whatever was replayed: a day is counted again from its raw points."""
        self.ensure_schema()  # a store that has not written yet: its database may not exist
        self.mark_unrolled_days()
        marks_answer, done_answer = self._query_many([
            self._versions(RP_VIOLATIONS, counts.WRITE_MARKS), self._versions(RP_ROLLUP, counts.ROLLUP_DONE)
        ])
        marks = self._by_time(marks_answer)
        days = sorted(counts.dirty_days(marks, self._by_time(done_answer)))
        violations = self._measurement(RP_VIOLATIONS, lines.VIOLATIONS)
        for day_ms in days:
            rows = self._rows(
                f'SELECT count("violation_id") AS n FROM {violations} WHERE time >= {day_ms * NS_PER_MS} '
                f"AND time < {(day_ms + buckets.DAY_MS) * NS_PER_MS} GROUP BY time(1h), * fill(none)"
            )
            hourly = [(_ms(r["time"]), r, int(r["n"])) for r in rows if r["n"]]
            out: list[bytes] = []
            for shape, rolled in counts.shape_counts(hourly).items():
                out += counts.rollup_lines(shape, day_ms, rolled)
            # The version seen before counting: a write since then changed the mark, so it is done again.
            out += counts.done_lines({day_ms: marks[day_ms]})
            self._writer.put(RP_ROLLUP, out)
        return len(days)

    def compute_rollups(self) -> int:
        """Recompute the hourly rollups of every hour written since the last run; returns the hours done.

        A rollup is computed from the raw readings of the whole hour, so computing it again (late data, a
        replay) overwrites the same points with the right totals: rollups are idempotent too."""
        with self._dirty_lock:
            dirty, self._dirty_hours = self._dirty_hours, defaultdict(set)
        done = 0
        try:
            for hour_ms, attributes in sorted(dirty.items()):
                if attributes:
                    self._rollup_hour(hour_ms, sorted(attributes))
                done += 1
                del dirty[hour_ms]
        finally:
            with self._dirty_lock:
                for hour_ms, attributes in dirty.items():
                    self._dirty_hours[hour_ms].update(attributes)
        return done

    def _rollup_hour(self, hour_ms: int, attributes: list[str]) -> None:
        selects = ", ".join(
            f"{fn}({quote_ident(a)}) AS {quote_ident(a + '_' + fn)}"
            for a in attributes
            for fn in ("count", "sum", "min", "max")
        )
        start_ns = hour_ms * NS_PER_MS
        rows = self._rows(
            f"SELECT {selects} FROM {self._measurement(RP_RAW, lines.READINGS)} "
            f"WHERE time >= {start_ns} AND time < {start_ns + buckets.HOUR_MS * NS_PER_MS} "
            f'GROUP BY "device", "kind", "grid", "district", "department"'
        )
        out: list[bytes] = []
        for row in rows:
            stats: dict[str, float | int] = {}
            for a in attributes:
                if row.get(f"{a}_count"):
                    stats[f"{a}_count"] = int(row[f"{a}_count"])
                    for fn in ("sum", "min", "max"):
                        stats[f"{a}_{fn}"] = float(row[f"{a}_{fn}"])
            if stats:
                tags = {k: row[k] for k in ("device", "kind", "grid", "district", "department") if row.get(k)}
                out.append(lines.rollup_line(hour_ms, tags, stats))
        if out:
            self._writer.put(RP_ROLLUP, out)

    def apply_retention(self, now_ms: int) -> None:
        """InfluxDB expires data itself: each retention policy has the configured duration."""
        self.ensure_schema()

    # -- lists ----------------------------------------------------------------------------------------------

    def _page(
        self,
        source: str,
        where: _Conditions,
        *,
        from_ms: int | None,
        to_ms: int | None,
        limit: int,
        cursor: tuple[int, str] | None,
        key: Callable[[dict[str, Any]], tuple[int, str]],
        keep: Callable[[dict[str, Any]], bool] = lambda _: True,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Newest-first keyset page ordered by key(row) = (time_ms, tiebreak), both descending.

        InfluxQL orders by time only, so each request reads whole milliseconds: when a request's LIMIT cuts
        a millisecond, that millisecond is read again whole, and rows are sorted by the key in Python."""
        collected: list[dict[str, Any]] = []
        upper_ms = to_ms
        if cursor is not None:
            at_ms, tiebreak = cursor
            same_ms = self._rows(
                f"SELECT * FROM {source}"
                + where.sql(f"time >= {at_ms * NS_PER_MS}", f"time < {(at_ms + 1) * NS_PER_MS}")
            )
            collected += sorted(
                (r for r in same_ms if key(r)[1] < tiebreak and keep(r)), key=key, reverse=True
            )
            upper_ms = at_ms if upper_ms is None else min(upper_ms, at_ms)
        chunk = max(SCAN_CHUNK, limit + 1)
        while len(collected) <= limit:
            bounds = _Conditions()
            bounds.time_range_ns(_ms_to_ns(from_ms), _ms_to_ns(upper_ms))
            rows = self._rows(
                f"SELECT * FROM {source}{where.sql(*bounds.terms)} ORDER BY time DESC LIMIT {chunk}"
            )
            if not rows:
                break
            exhausted = len(rows) < chunk
            if not exhausted:
                last_ms = _ms(rows[-1]["time"])
                rows = [r for r in rows if _ms(r["time"]) > last_ms]
                rows += self._rows(
                    f"SELECT * FROM {source}"
                    + where.sql(f"time >= {last_ms * NS_PER_MS}", f"time < {(last_ms + 1) * NS_PER_MS}")
                )
                upper_ms = last_ms
            collected += sorted((r for r in rows if keep(r)), key=key, reverse=True)
            if exhausted:
                break
        return collected[: limit + 1], len(collected) > limit

    def query_violations(self, query: ViolationQuery) -> Page[Violation]:
        limit = _check_limit(query.limit)
        where = _violation_conditions(query.filter())
        if query.bbox is not None:
            box = query.bbox
            where.add(
                f"lat >= {box.min_lat!r} AND lat <= {box.max_lat!r} AND lon >= {box.min_lon!r} "
                f"AND lon <= {box.max_lon!r}"
            )
        if query.status is ViolationStatus.CLEARED:
            where.add("end_time_ms >= -9223372036854775807")  # the field exists only once cleared
        to_ms = query.to_ms
        if query.open_at_ms is not None:
            to_ms = query.open_at_ms + 1 if to_ms is None else min(to_ms, query.open_at_ms + 1)

        def keep(row: dict[str, Any]) -> bool:
            end = row.get("end_time_ms")
            if query.status is ViolationStatus.OPEN and end is not None:
                return False
            return not (query.open_at_ms is not None and end is not None and end <= query.open_at_ms)

        rows, more = self._page(
            self._measurement(RP_VIOLATIONS, lines.VIOLATIONS),
            where,
            from_ms=query.from_ms,
            to_ms=to_ms,
            limit=limit,
            cursor=None if query.cursor is None else _cursor(query.cursor),
            key=lambda r: (_ms(r["time"]), r["violation_id"]),
            keep=keep,
        )
        items = [_violation_from_row(r) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1].start_time_ms, items[-1].violation_id) if more else None
        return Page(items, next_cursor)

    def get_violation(self, violation_id: str) -> Violation | None:
        rows = self._rows(
            f"SELECT * FROM {self._measurement(RP_VIOLATIONS, lines.VIOLATIONS)} "
            f"WHERE violation_id = {quote_string(violation_id)}"
        )
        return _violation_from_row(rows[0]) if rows else None

    def violation_history(self, violation_id: str) -> list[LifecycleEntry]:
        rows = self._rows(
            f"SELECT * FROM {self._measurement(RP_VIOLATIONS, lines.VIOLATION_HISTORY)} "
            f"WHERE violation_id = {quote_string(violation_id)}"
        )
        return history_order([
            LifecycleEntry(violation_id=violation_id, change=LifecycleChange(row["change"]),
                           time_ms=int(row["time_ms"]), actor=row["actor"])
            for row in rows
        ])

    def query_events(self, query: EventQuery) -> Page[Event]:
        limit = _check_limit(query.limit)
        where = _Conditions()
        if query.device_id is not None:
            where.one_of("device", [query.device_id])
        if query.kind is not None:
            where.one_of("kind", [query.kind])
        rows, more = self._page(
            self._measurement(RP_RAW, lines.READINGS),
            where,
            from_ms=query.from_ms,
            to_ms=query.to_ms,
            limit=limit,
            cursor=None if query.cursor is None else _cursor(query.cursor),
            key=lambda r: (_ms(r["time"]), r["event_id"]),
        )
        items = [_event_from_row(r) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1].event_time_ms, items[-1].event_id) if more else None
        return Page(items, next_cursor)

    def query_dead_letters(self, query: DeadLetterQuery) -> Page[DeadLetter]:
        limit = _check_limit(query.limit)
        where = _Conditions()
        if query.reason is not None:
            where.one_of("reason", [query.reason])
        cursor = None
        if query.cursor is not None:
            at_ms, tiebreak = _cursor(query.cursor)
            if not tiebreak.isdigit():
                raise InvalidCursor(f"cursor {query.cursor[:40]!r} is not one this API returned")
            cursor = (at_ms, tiebreak.zfill(20))
        rows, more = self._page(
            self._measurement(RP_VIOLATIONS, lines.DEAD_LETTERS),
            where,
            from_ms=None,
            to_ms=None,
            limit=limit,
            cursor=cursor,
            key=lambda r: (_ms(r["time"]), f"{r['time']:020d}"),
        )
        items = [
            DeadLetter(
                reason=r["reason"],
                detail=r["detail"],
                topic=r["topic"],
                payload=base64.b64decode(r["payload_b64"]),
                received_time_ms=_ms(r["time"]),
                source=r["source"],
                # Points written before the id was a field have none: it is derived again.
                dead_letter_id=r.get("dead_letter_id") or "",
            )
            for r in rows[:limit]
        ]
        next_cursor = (
            encode_cursor(_ms(rows[limit - 1]["time"]), str(rows[limit - 1]["time"])) if more else None
        )
        return Page(items, next_cursor)

    def count_dead_letters_by_reason(self) -> dict[str, int]:
        rows = self._rows(
            f"SELECT count(detail) FROM {self._measurement(RP_VIOLATIONS, lines.DEAD_LETTERS)} "
            'GROUP BY "reason"'
        )
        return {r["reason"]: int(r["count"]) for r in rows}

    # -- control-centre queries -----------------------------------------------------------------------------

    def _grouped_counts(
        self, filter_: ViolationFilter, from_ms: int, to_ms: int, group_tags: list[str], interval: str | None
    ) -> list[dict[str, Any]]:
        where = _violation_conditions(filter_)
        needed = set(group_tags) | _filter_tags(filter_)
        # The narrowest count measurement with every tag needed; else the violations themselves.
        source, field = next(
            ((name, "n") for name, tags in lines.COUNT_MEASUREMENTS if needed <= set(tags)),
            (lines.VIOLATIONS, "violation_id"),
        )
        grouping = [f"time({interval})"] if interval else []
        grouping += [quote_ident(t) for t in group_tags]
        group_sql = f" GROUP BY {', '.join(grouping)}" if grouping else ""
        return self._rows(
            f"SELECT count({quote_ident(field)}) AS count FROM {self._measurement(RP_VIOLATIONS, source)}"
            + where.sql(f"time >= {from_ms * NS_PER_MS}", f"time < {to_ms * NS_PER_MS}")
            + group_sql
            + (" fill(none)" if interval else "")
        )

    def _rolled_up_counts(
        self, filter_: ViolationFilter, from_ms: int, to_ms: int, group_tags: list[str], bucket: Bucket | None
    ) -> dict[tuple[int, tuple[str, ...]], int] | None:
        """Counts per (bucket start, group) from the count rollups (store/influx_counts.py), the days
        written since their last pass counted from the raw points; None when no rollup can answer. Without
        `bucket` (a top-N), every bucket start is 0."""
        wanted = _filter_values(filter_)
        shape = counts.choose(set(group_tags) | wanted.keys(), from_ms, to_ms, bucket)
        if shape is None or not self._mark_complete():
            return None
        first_day, end_day = buckets.floor_ms(from_ms, Bucket.DAY), buckets.ceil_ms(to_ms, Bucket.DAY)
        marks, done, points = self._query_many([
            self._versions(RP_VIOLATIONS, counts.WRITE_MARKS, first_day, end_day),
            self._versions(RP_ROLLUP, counts.ROLLUP_DONE, first_day, end_day),
            f'SELECT "parts", "rows" FROM {self._measurement(RP_ROLLUP, counts.ROLLUPS)} '
            f'WHERE "shape" = {quote_string(shape.name)} AND time >= {first_day * NS_PER_MS} '
            f"AND time < {end_day * NS_PER_MS}",
        ])
        dirty = counts.dirty_days(self._by_time(marks), self._by_time(done))
        column = {dim: i + 1 for i, dim in enumerate(shape.dims)}  # rows start with their bucket
        checks = [(column[dim], set(values)) for dim, values in wanted.items()]
        groups = [column[tag] for tag in group_tags]
        # The hot loop (a top-N by device adds up 60,000 rows a month): one tag is keyed by its value alone,
        # and the keys become (bucket, group) tuples once per distinct key at the end.
        single = groups[0] if len(groups) == 1 else None
        summed: dict[Any, int] = defaultdict(int)
        for day_ms, rows in counts.decode_rollup_points(self._merge_rows(points)).items():
            if day_ms in dirty:
                continue
            whole_day = from_ms <= day_ms and day_ms + buckets.DAY_MS <= to_ms
            for entry in rows:
                if not whole_day and not from_ms <= entry[0] < to_ms:
                    continue
                for i, values in checks:
                    if entry[i] not in values:
                        break
                else:
                    group = entry[single] if single is not None else tuple([entry[i] for i in groups])
                    summed[(entry[0], group) if bucket is not None else group] += entry[-1]
        totals: dict[tuple[int, tuple[str, ...]], int] = defaultdict(int)
        for key, n in summed.items():
            bucket_ms, group = key if bucket is not None else (0, key)
            totals[(bucket_ms, (group,) if single is not None else group)] += n
        if dirty:
            interval = "1h" if shape.size_ms == buckets.HOUR_MS else "1d"
            first, last = max(from_ms, min(dirty)), min(to_ms, max(dirty) + buckets.DAY_MS)
            for row in self._grouped_counts(filter_, first, last, group_tags, interval):
                bucket_ms = _ms(row["time"])
                if row["count"] and bucket_ms - bucket_ms % buckets.DAY_MS in dirty:
                    group = tuple(row.get(t) or "" for t in group_tags)
                    totals[(bucket_ms if bucket is not None else 0, group)] += int(row["count"])
        return totals

    def count_violations(self, query: ViolationCountQuery) -> list[CountRow]:
        from_ms, to_ms = buckets.widen(query.from_ms, query.to_ms, query.bucket)
        group_tags = [_tag(d) for d in query.group_by]
        # Months differ in length: count per day and add the days up per month.
        interval = {
            Bucket.MINUTE: "1m",
            Bucket.HOUR: "1h",
            Bucket.DAY: "1d",
            Bucket.WEEK: "7d,4d",
            Bucket.MONTH: "1d",
        }[query.bucket]
        totals: dict[tuple[int, tuple[str, ...]], int] = defaultdict(int)
        rolled = self._rolled_up_counts(query.filter, from_ms, to_ms, group_tags, query.bucket)
        if rolled is not None:
            for (bucket_ms, group), n in rolled.items():
                totals[(buckets.floor_ms(bucket_ms, query.bucket), group)] += n
        else:
            for row in self._grouped_counts(query.filter, from_ms, to_ms, group_tags, interval):
                if row["count"]:
                    bucket_ms = buckets.floor_ms(_ms(row["time"]), query.bucket)
                    totals[(bucket_ms, tuple(row.get(t) or "" for t in group_tags))] += int(row["count"])
        if len(totals) > MAX_RESULT_ROWS:
            raise QueryTooLarge(f"more than {MAX_RESULT_ROWS} rows: use a larger bucket or fewer groups")
        return [CountRow(b, g, n) for (b, g), n in sorted(totals.items())]

    def top_violations(self, query: TopQuery) -> list[TopRow]:
        _check_limit(query.limit)
        tag = _tag(query.dimension)
        rolled = self._rolled_up_counts(query.filter, query.from_ms, query.to_ms, [tag], None)
        counted: dict[str, int] = defaultdict(int)
        if rolled is not None:
            for (_, (key,)), n in rolled.items():
                counted[key] += n
        else:
            for r in self._grouped_counts(query.filter, query.from_ms, query.to_ms, [tag], None):
                counted[r.get(tag) or ""] += int(r["count"])
        ranked = sorted(((k, n) for k, n in counted.items() if k and n), key=lambda kn: (-kn[1], kn[0]))
        return [TopRow(k, n) for k, n in ranked[: query.limit]]

    def reading_series(self, query: ReadingSeriesQuery) -> ReadingSeries:
        limit = _check_limit(query.limit)
        field = quote_ident(query.attribute)
        where = _Conditions()
        where.one_of("device", [query.device_id])
        readings = self._measurement(RP_RAW, lines.READINGS)
        if query.bucket is None:
            where.time_range_ns(query.from_ms * NS_PER_MS, query.to_ms * NS_PER_MS)
            where.add(f"{field} = {field}")  # only readings that have the attribute (a field is never NaN)
            rows = self._rows(
                f"SELECT {field}, event_id FROM {readings}{where.sql()} ORDER BY time ASC LIMIT {limit + 1}"
            )
            values = sorted(
                (_ms(r["time"]), r["event_id"], r[query.attribute])
                for r in rows
                if isinstance(r.get(query.attribute), int | float)
            )
            points = [ReadingPoint(t, float(v)) for t, _, v in values[:limit]]
            return ReadingSeries(points=points, buckets=[], truncated=len(rows) > limit)
        from_ms, to_ms = buckets.widen(query.from_ms, query.to_ms, query.bucket)
        where.time_range_ns(from_ms * NS_PER_MS, to_ms * NS_PER_MS)
        interval = {
            Bucket.MINUTE: "1m",
            Bucket.HOUR: "1h",
            Bucket.DAY: "1d",
            Bucket.WEEK: "7d,4d",
            Bucket.MONTH: "1d",
        }[query.bucket]
        raw_from_ms = self.now_ms() - self.retention.raw_readings_days * buckets.DAY_MS
        if query.bucket is Bucket.MINUTE or from_ms >= raw_from_ms:
            # Raw readings still cover the range: aggregate them (exact, and never waits for a rollup).
            rows = self._rows(
                f"SELECT count({field}) AS n, sum({field}) AS s, min({field}) AS lo, "
                f"max({field}) AS hi FROM {readings}{where.sql()} GROUP BY time({interval}) "
                "fill(none)"
            )
        else:
            a = query.attribute
            rows = self._rows(
                f"SELECT sum({quote_ident(a + '_count')}) AS n, sum({quote_ident(a + '_sum')}) AS s, "
                f"min({quote_ident(a + '_min')}) AS lo, max({quote_ident(a + '_max')}) AS hi "
                f"FROM {self._measurement(RP_ROLLUP, lines.READINGS_HOURLY)}{where.sql()} "
                f"GROUP BY time({interval}) fill(none)"
            )
        merged: dict[int, list[float]] = {}
        for r in rows:
            if not r.get("n"):
                continue
            start = buckets.floor_ms(_ms(r["time"]), query.bucket)
            n, s, lo, hi = int(r["n"]), float(r["s"]), float(r["lo"]), float(r["hi"])
            if start in merged:
                m = merged[start]
                merged[start] = [m[0] + n, m[1] + s, min(m[2], lo), max(m[3], hi)]
            else:
                merged[start] = [n, s, lo, hi]
        found = [ReadingBucket(t, int(n), s / n, lo, hi) for t, (n, s, lo, hi) in sorted(merged.items())]
        return ReadingSeries(points=[], buckets=found[:limit], truncated=len(found) > limit)

    def latest_readings(self, query: LatestReadingsQuery) -> Page[Event]:
        limit = _check_limit(query.limit)
        where = _Conditions()
        where.one_of("kind", [query.kind])
        rows = self._rows(
            f"SELECT * FROM {self._measurement(RP_RAW, lines.READINGS)}{where.sql()} "
            'GROUP BY "device" ORDER BY time DESC LIMIT 1'
        )
        latest: dict[str, Event] = {}
        for row in rows:
            event = _event_from_row(row)
            known = latest.get(event.device_id)
            if known is None or (event.event_time_ms, event.event_id) > (known.event_time_ms, known.event_id):
                latest[event.device_id] = event
        ordered = [
            e
            for device, e in sorted(latest.items())
            if (query.cursor is None or device > query.cursor)
            and (query.attribute is None or query.attribute in e.attributes)
        ]
        items = ordered[:limit]
        return Page(items, items[-1].device_id if len(ordered) > limit else None)


class _LazyTransport:
    """Chooses v1 or v2 on the first write (asking the server), so a store can start while InfluxDB is
    down; creates the schema first when configured to."""

    def __init__(self, store: InfluxStore) -> None:
        self._store = store
        self._transport: Transport | None = None

    def write(self, target: str, body: bytes) -> None:
        from store.influx_writer import WriteFailed

        if self._transport is None:
            try:
                self._store.ensure_schema()
                self._transport = self._build()
            except InfluxQueryError as exc:
                raise WriteFailed(str(exc)) from exc
        self._transport.write(target, body)

    def _build(self) -> Transport:
        store, s = self._store, self._store.settings
        if store.api() is InfluxApi.V1:
            return V1Transport(
                store._http,
                store.url,
                store.database,
                s.username,
                s.password.get_secret_value() if s.password else None,
                s.timeout_s,
            )
        token = s.token.get_secret_value() if s.token else None
        return V2Transport(
            store.url,
            token,
            s.org,
            lambda rp: s.bucket if s.bucket and rp == RP_RAW else f"{store.database}/{rp}",
            s.timeout_s,
        )


def _api_for_version(version: str) -> InfluxApi:
    """1.8 added the v2 write endpoint; anything older (or a 1.x without a version) speaks only v1."""
    digits = version.lstrip("v").split(".")
    try:
        major, minor = int(digits[0]), int(digits[1].split("~")[0].split("-")[0])
    except (ValueError, IndexError):
        return InfluxApi.V2 if version else InfluxApi.V1
    if major == 1 and minor < 8:
        return InfluxApi.V1
    return InfluxApi.V2


def _check_limit(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return limit


def _cursor(cursor: str) -> tuple[int, str]:
    time_ms, tiebreak = decode_cursor(cursor)
    if isinstance(time_ms, bool) or not -(2**62) <= time_ms * NS_PER_MS <= 2**62:
        raise InvalidCursor(f"cursor {cursor[:40]!r} is not one this API returned")
    return time_ms, tiebreak


def _location(row: dict[str, Any]) -> Location | None:
    lat, lon = row.get("lat"), row.get("lon")
    return None if lat is None or lon is None else Location(lat=float(lat), lon=float(lon))


def _violation_from_row(row: dict[str, Any]) -> Violation:
    cleared = row.get("end_time_ms") is not None
    evidence = row["cleared_evidence"] if cleared else row["open_evidence"]
    return Violation(
        violation_id=row["violation_id"],
        type=row["type"],
        severity=Severity(row["severity"]),
        device_id=row["device"],
        start_time_ms=int(row["start_time_ms"]),
        status=ViolationStatus.CLEARED if cleared else ViolationStatus.OPEN,
        end_time_ms=int(row["end_time_ms"]) if cleared else None,
        location=_location(row),
        evidence=_decode_evidence(evidence),
        tags=_decode_tags(row["tags_json"]),
        updated_time_ms=int(row["cleared_updated_ms"] if cleared else row["open_updated_ms"]),
        detected_time_ms=None if row.get("detected_time_ms") is None else int(row["detected_time_ms"]),
    )


def _event_from_row(row: dict[str, Any]) -> Event:
    return Event(
        event_id=row["event_id"],
        device_id=row["device"],
        kind=row["kind"],
        event_time_ms=_ms(row["time"]),
        ingest_time_ms=int(row["ingest_time_ms"]),
        attributes=_decode_attributes(row["attributes_json"]),
        location=_location(row),
        source=row["source"],
        tags=_decode_tags(row["tags_json"]),
    )


def _prediction_from_row(row: dict[str, Any]) -> Prediction:
    predicted = int(row["predicted_time_ms"])
    return Prediction(
        type=row["type"],
        device_id=row["device"],
        computed_time_ms=int(row["computed_time_ms"]),
        predicted_time_ms=None if predicted == lines.NO_PREDICTED_TIME else predicted,
        value=float(row["value"]),
        details=msgspec.json.decode(row["details_json"]),
        location=_location(row),
        tags=msgspec.json.decode(row["tags_json"]),
    )
