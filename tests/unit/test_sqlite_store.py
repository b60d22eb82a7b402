"""The embedded SQLite store, through its public interface, as the processor and the API use it."""

from __future__ import annotations

import itertools
import pathlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import pytest

from core.models import (
    DeadLetter,
    Event,
    Evidence,
    Location,
    Severity,
    Violation,
    ViolationStatus,
)
from store.base import (
    Bucket,
    DeadLetterQuery,
    EventQuery,
    InvalidCursor,
    LatestReadingsQuery,
    ReadingSeriesQuery,
    ViolationCountQuery,
    ViolationQuery,
    encode_cursor,
)
from store.sqlite_store import SqliteStore, StoreClosed

T0 = 1_700_000_000_000  # an arbitrary epoch-ms origin
MINUTE = 60_000


@pytest.fixture
def store(tmp_path: pathlib.Path) -> Iterator[SqliteStore]:
    s = SqliteStore.in_directory(tmp_path / "data")
    yield s
    s.close()


def event(n: int, *, device: str = "bin-1", kind: str = "bin", t: int | None = None, **extra: Any) -> Event:
    fields: dict[str, Any] = {
        "event_id": f"e{n:05d}",
        "device_id": device,
        "kind": kind,
        "event_time_ms": T0 + n * MINUTE if t is None else t,
        "ingest_time_ms": T0 + n * MINUTE + 250,
        "attributes": {"fill_pct": 10.5 + n},
    }
    fields.update(extra)
    return Event(**fields)


def violation(
    n: int,
    *,
    type_: str = "bin_overflow",
    device: str = "bin-1",
    start: int | None = None,
    status: ViolationStatus = ViolationStatus.OPEN,
    updated: int | None = None,
    **extra: Any,
) -> Violation:
    start_ms = T0 + n * MINUTE if start is None else start
    fields: dict[str, Any] = {
        "violation_id": f"v{n:05d}",
        "type": type_,
        "severity": Severity.HIGH,
        "device_id": device,
        "start_time_ms": start_ms,
        "status": status,
        "end_time_ms": None if status is ViolationStatus.OPEN else start_ms + 5 * MINUTE,
        "evidence": Evidence(event_ids=[f"e{n:05d}"], details={"fill_pct": 97.0, "threshold_pct": 90}),
        "updated_time_ms": updated if updated is not None else (
            start_ms if status is ViolationStatus.OPEN else start_ms + 5 * MINUTE
        ),
    }
    fields.update(extra)
    return Violation(**fields)


def cleared(v: Violation, after_ms: int = 5 * MINUTE) -> Violation:
    end = v.start_time_ms + after_ms
    return Violation(
        **{
            **{f: getattr(v, f) for f in v.__struct_fields__},
            "status": ViolationStatus.CLEARED,
            "end_time_ms": end,
            "updated_time_ms": end,
        }
    )


def dead_letter(n: int, *, reason: str = "decode_error", t: int | None = None) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail=f"byte {n}: unexpected character",
        topic=f"city/bins/{n}",
        payload=b"\xff\x00not json " + str(n).encode(),
        received_time_ms=T0 + n * 1000 if t is None else t,
        source="native",
    )


def all_violations(store: SqliteStore, query: ViolationQuery) -> list[Violation]:
    return store.query_violations(ViolationQuery(**{**query.__dict__, "limit": 10_000})).items


# -- round trips and idempotence -----------------------------------------------------------------------------


def test_event_round_trip_keeps_every_field(store: SqliteStore) -> None:
    located = event(
        1,
        attributes={"fill_pct": 81.5, "battery_v": 3, "flags": ["lid_open"], "raw": {"a": None, "b": True}},
        location=Location(lat=52.52, lon=13.405),
        source="lorawan",
        tags={"district": "Mitte", "grid": "g-17"},
    )
    unlocated = event(2)
    store.write_events([located, unlocated])
    store.flush()

    assert store.query_events(EventQuery()).items == [unlocated, located]


def test_duplicate_events_are_stored_once(store: SqliteStore) -> None:
    store.write_events([event(1), event(1), event(2)])
    store.write_events([event(1)])  # redelivered in a later batch
    store.flush()
    store.write_events([event(2)])  # redelivered after a flush
    store.flush()

    assert [e.event_id for e in store.query_events(EventQuery()).items] == ["e00002", "e00001"]


def test_redelivered_events_and_violation_states_are_counted_once(store: SqliteStore) -> None:
    """The hourly reading rollups, the latest reading and the violation counts see each event and each
    violation once, whether a redelivery comes in the same batch, a later one, or after a flush."""
    store.write_events([event(1), event(2), event(1)])
    store.flush()
    store.write_events([event(2), event(3), event(1)])  # two redelivered among one new
    opened = violation(1)
    store.write_violations([opened, violation(2)])
    store.flush()
    cleared = msgspec.structs.replace(opened, status=ViolationStatus.CLEARED, end_time_ms=T0 + 5 * MINUTE,
                                      updated_time_ms=T0 + 5 * MINUTE)
    store.write_violations([opened, cleared, violation(3)])  # a replayed open, its clear, one new
    store.flush()

    [hour] = store.reading_series(ReadingSeriesQuery("bin-1", "fill_pct", T0, T0 + 3_600_000,
                                                     bucket=Bucket.HOUR)).buckets
    assert (hour.count, hour.min, hour.max) == (3, 11.5, 13.5)
    assert hour.mean == pytest.approx(12.5)
    [latest] = store.latest_readings(LatestReadingsQuery(kind="bin")).items
    assert latest.event_id == "e00003"
    counts = store.count_violations(ViolationCountQuery(Bucket.DAY, T0, T0 + 86_400_000))
    assert sum(row.count for row in counts) == 3


def test_violation_round_trip_is_exact(store: SqliteStore) -> None:
    full = violation(
        1,
        severity=Severity.CRITICAL,
        location=Location(lat=-33.87, lon=151.21),
        evidence=Evidence(
            event_ids=["e1", "e2"],
            details={"speed_kmh": 71.25, "limit_kmh": 50, "zone": "school", "phases": [1, 2]},
            snapshot_url="https://cams.example/s/1.jpg",
            plate="B-XY 123",
        ),
        tags={"district": "Pankow"},
    )
    done = cleared(violation(2))
    store.write_violations([full, done])
    store.flush()

    assert store.get_violation(full.violation_id) == full
    assert store.get_violation(done.violation_id) == done
    assert store.get_violation("no-such-id") is None


def test_writing_the_same_violation_twice_keeps_one(store: SqliteStore) -> None:
    v = violation(1)
    store.write_violations([v, v])
    store.flush()
    store.write_violations([v])
    store.flush()

    assert all_violations(store, ViolationQuery()) == [v]


def test_newer_violation_state_replaces_older(store: SqliteStore) -> None:
    opened = violation(1)
    store.write_violations([opened])
    store.write_violations([cleared(opened)])
    store.flush()

    assert store.get_violation(opened.violation_id) == cleared(opened)
    assert all_violations(store, ViolationQuery(status=ViolationStatus.OPEN)) == []


def test_replayed_open_state_never_reopens_a_cleared_violation(store: SqliteStore) -> None:
    opened = violation(1)
    store.write_violations([opened])
    store.write_violations([cleared(opened)])
    store.flush()

    store.write_violations([opened])  # at-least-once redelivery of the old state, in a later batch
    store.write_violations([cleared(opened), opened])  # ... and out of order inside one batch
    store.flush()

    assert store.get_violation(opened.violation_id) == cleared(opened)


def test_open_and_clear_at_the_same_time_stay_cleared_in_any_order(store: SqliteStore) -> None:
    opened = violation(1)
    same_time_clear = cleared(opened, after_ms=0)
    assert same_time_clear.updated_time_ms == opened.updated_time_ms
    store.write_violations([same_time_clear, opened])
    store.flush()

    assert store.get_violation(opened.violation_id) == same_time_clear


def test_dead_letters_round_trip_and_counts(store: SqliteStore) -> None:
    letters = [dead_letter(1), dead_letter(2, reason="unknown_device"), dead_letter(3)]
    store.write_dead_letters(letters)
    store.write_dead_letters([letters[0]])  # a replay: upserted by its id, not a second entry
    store.flush()

    page = store.query_dead_letters(DeadLetterQuery())
    assert page.items == [letters[2], letters[1], letters[0]]
    assert page.next_cursor is None
    assert store.count_dead_letters_by_reason() == {"decode_error": 2, "unknown_device": 1}
    assert store.query_dead_letters(DeadLetterQuery(reason="unknown_device")).items == [letters[1]]


def test_dead_letters_received_at_the_same_time_are_newest_written_first(store: SqliteStore) -> None:
    letters = [dead_letter(n, t=T0) for n in range(5)]
    store.write_dead_letters(letters)
    store.flush()

    assert store.query_dead_letters(DeadLetterQuery()).items == letters[::-1]


def test_empty_store_answers_every_query(store: SqliteStore) -> None:
    store.ping()
    assert store.query_events(EventQuery()).items == []
    assert store.query_violations(ViolationQuery()).next_cursor is None
    assert store.query_dead_letters(DeadLetterQuery()).items == []
    assert store.count_dead_letters_by_reason() == {}


# -- filters and order ---------------------------------------------------------------------------------------


def test_event_filters(store: SqliteStore) -> None:
    events = [
        event(n, device=f"dev-{n % 3}", kind="air" if n % 2 else "bin")
        for n in range(30)
    ]
    store.write_events(events)
    store.flush()

    def ids(**filters: Any) -> list[str]:
        return [e.event_id for e in store.query_events(EventQuery(limit=1000, **filters)).items]

    def expected(pred: Any) -> list[str]:
        return [e.event_id for e in sorted(events, key=lambda e: e.event_time_ms, reverse=True) if pred(e)]

    assert ids(device_id="dev-1") == expected(lambda e: e.device_id == "dev-1")
    assert ids(kind="air") == expected(lambda e: e.kind == "air")
    assert ids(device_id="dev-1", kind="air") == expected(
        lambda e: e.device_id == "dev-1" and e.kind == "air"
    )
    # [from, to): the start is included, the end is not.
    window = {"from_ms": events[10].event_time_ms, "to_ms": events[20].event_time_ms}
    assert ids(**window) == expected(lambda e: 10 <= int(e.event_id[1:]) < 20)
    assert ids(kind="bin", **window) == expected(lambda e: e.kind == "bin" and 10 <= int(e.event_id[1:]) < 20)
    assert ids(device_id="nobody") == []


def test_violation_filters(store: SqliteStore) -> None:
    types = ["bin_overflow", "speeding", "noise"]
    violations = [
        violation(n, type_=types[n % 3], device=f"dev-{n % 4}")
        if n % 5 else cleared(violation(n, type_=types[n % 3], device=f"dev-{n % 4}"))
        for n in range(60)
    ]
    store.write_violations(violations)
    store.flush()

    def ids(**filters: Any) -> list[str]:
        return [v.violation_id for v in all_violations(store, ViolationQuery(**filters))]

    def expected(pred: Any) -> list[str]:
        newest_first = sorted(violations, key=lambda v: v.start_time_ms, reverse=True)
        return [v.violation_id for v in newest_first if pred(v)]

    assert ids() == expected(lambda v: True)
    assert ids(types=("speeding",)) == expected(lambda v: v.type == "speeding")
    assert ids(types=("speeding", "noise")) == expected(lambda v: v.type in ("speeding", "noise"))
    assert ids(device_ids=("dev-1", "dev-2")) == expected(lambda v: v.device_id in ("dev-1", "dev-2"))
    assert ids(status=ViolationStatus.CLEARED) == expected(lambda v: v.status is ViolationStatus.CLEARED)
    assert ids(status=ViolationStatus.OPEN, types=("noise",), device_ids=("dev-3",)) == expected(
        lambda v: v.status is ViolationStatus.OPEN and v.type == "noise" and v.device_id == "dev-3"
    )
    window = {"from_ms": violations[10].start_time_ms, "to_ms": violations[40].start_time_ms}
    assert ids(**window) == expected(lambda v: 10 <= int(v.violation_id[1:]) < 40)
    assert ids(types=("bin_overflow",), **window) == expected(
        lambda v: v.type == "bin_overflow" and 10 <= int(v.violation_id[1:]) < 40
    )
    assert ids(types=("no_such_type",)) == []


def test_rows_at_the_same_time_are_ordered_by_id_descending(store: SqliteStore) -> None:
    store.write_events([event(n, t=T0) for n in (3, 1, 2)] + [event(9, t=T0 - 1)])
    store.write_violations([violation(n, start=T0) for n in (2, 3, 1)])
    store.flush()

    events = store.query_events(EventQuery()).items
    assert [e.event_id for e in events] == ["e00003", "e00002", "e00001", "e00009"]
    violations = store.query_violations(ViolationQuery()).items
    assert [v.violation_id for v in violations] == ["v00003", "v00002", "v00001"]


# -- pagination ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 20, 21, 100])
def test_paging_returns_every_violation_once_in_order(store: SqliteStore, count: int) -> None:
    # Many rows share a start time, so the cursor's id tiebreak matters.
    violations = [violation(n, start=T0 + (n // 7) * MINUTE, type_="speeding") for n in range(count)]
    store.write_violations(violations)
    store.flush()

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = store.query_violations(ViolationQuery(types=("speeding",), limit=10, cursor=cursor))
        pages += 1
        assert len(page.items) <= 10
        seen += [v.violation_id for v in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break

    newest_first = sorted(violations, key=lambda v: (v.start_time_ms, v.violation_id), reverse=True)
    assert seen == [v.violation_id for v in newest_first]
    # A full last page does not announce an empty page after it.
    assert pages == max(1, -(-count // 10))


def test_paging_is_stable_when_newer_rows_arrive_between_pages(store: SqliteStore) -> None:
    store.write_violations([violation(n) for n in range(25)])
    store.write_events([event(n) for n in range(25)])
    store.write_dead_letters([dead_letter(n) for n in range(25)])
    store.flush()

    first_v = store.query_violations(ViolationQuery(limit=10))
    first_e = store.query_events(EventQuery(limit=10))
    first_d = store.query_dead_letters(DeadLetterQuery(limit=10))

    # Newer rows, including some at the very time of the page boundary.
    boundary = first_v.items[-1].start_time_ms
    store.write_violations([violation(n) for n in range(100, 110)] + [violation(200, start=boundary)])
    store.write_events([event(n) for n in range(100, 110)])
    store.write_dead_letters([dead_letter(n) for n in range(100, 110)])
    store.flush()

    def rest(first: Any, query: Any, fetch: Any) -> list[Any]:
        items = list(first.items)
        cursor = first.next_cursor
        while cursor is not None:
            page = fetch(type(query)(limit=10, cursor=cursor))
            items += page.items
            cursor = page.next_cursor
        return items

    vs = rest(first_v, ViolationQuery(), store.query_violations)
    assert [v.violation_id for v in vs] == [f"v{n:05d}" for n in range(24, -1, -1)]
    es = rest(first_e, EventQuery(), store.query_events)
    assert [e.event_id for e in es] == [f"e{n:05d}" for n in range(24, -1, -1)]
    ds = rest(first_d, DeadLetterQuery(), store.query_dead_letters)
    assert [d.topic for d in ds] == [f"city/bins/{n}" for n in range(24, -1, -1)]


def test_event_paging_with_filters(store: SqliteStore) -> None:
    store.write_events([event(n, device=f"dev-{n % 2}", t=T0 + (n // 4) * MINUTE) for n in range(50)])
    store.flush()

    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = store.query_events(EventQuery(device_id="dev-0", limit=4, cursor=cursor))
        seen += [e.event_id for e in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert sorted(seen) == [f"e{n:05d}" for n in range(0, 50, 2)]
    assert len(seen) == len(set(seen)) == 25


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "",
        "W10",  # base64 of []
        "WyJhIiwgImIiXQ",  # base64 of ["a", "b"]
        encode_cursor(T0, "x")[:-3] + "!!!",
        encode_cursor(2**70, "v1"),  # beyond SQLite's integers
    ],
)
def test_invalid_cursor_is_rejected(store: SqliteStore, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        store.query_violations(ViolationQuery(cursor=cursor))
    with pytest.raises(InvalidCursor):
        store.query_events(EventQuery(cursor=cursor))
    with pytest.raises(InvalidCursor):
        store.query_dead_letters(DeadLetterQuery(cursor=cursor))


def test_a_violation_cursor_is_not_a_dead_letter_cursor(store: SqliteStore) -> None:
    store.write_violations([violation(n) for n in range(3)])
    store.flush()
    cursor = store.query_violations(ViolationQuery(limit=1)).next_cursor
    assert cursor is not None
    with pytest.raises(InvalidCursor):
        store.query_dead_letters(DeadLetterQuery(cursor=cursor))


def test_limit_must_be_positive(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.query_violations(ViolationQuery(limit=0))


# -- durability and lifecycle --------------------------------------------------------------------------------


def test_flushed_data_survives_close_and_reopen(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nested" / "dir" / "store.sqlite3"
    first = SqliteStore(path)
    v = violation(1)
    first.write_events([event(1)])
    first.write_violations([v])
    first.write_dead_letters([dead_letter(1)])
    first.flush()
    first.close()

    reopened = SqliteStore(path)
    try:
        assert reopened.query_events(EventQuery()).items == [event(1)]
        assert reopened.get_violation(v.violation_id) == v
        assert reopened.count_dead_letters_by_reason() == {"decode_error": 1}
        # The reopened store keeps enforcing the upsert rule on what it loaded.
        reopened.write_violations([cleared(v)])
        reopened.write_violations([v])
        reopened.flush()
        assert reopened.get_violation(v.violation_id) == cleared(v)
    finally:
        reopened.close()


def test_readers_see_writes_once_flushed(store: SqliteStore) -> None:
    store.write_events([event(1)])
    assert store.query_events(EventQuery()).items == []
    store.flush()
    assert store.query_events(EventQuery()).items == [event(1)]


def test_a_failed_batch_is_not_half_written_and_keeps_earlier_batches(store: SqliteStore) -> None:
    store.write_events([event(1)])  # not flushed yet
    broken = msgspec.structs.replace(event(3), kind=None)  # structs do not validate on construction
    with pytest.raises(sqlite3.IntegrityError):
        store.write_events([event(2), broken])
    store.flush()

    assert store.query_events(EventQuery()).items == [event(1)]


def test_close_commits_pending_writes(tmp_path: pathlib.Path) -> None:
    first = SqliteStore.in_directory(tmp_path)
    first.write_events([event(1)])
    first.close()
    first.close()  # idempotent

    reopened = SqliteStore.in_directory(tmp_path)
    try:
        assert reopened.query_events(EventQuery()).items == [event(1)]
    finally:
        reopened.close()


def test_closed_store_refuses_reads_and_writes(tmp_path: pathlib.Path) -> None:
    s = SqliteStore.in_directory(tmp_path)
    s.ping()
    s.close()
    with pytest.raises(StoreClosed):
        s.ping()
    with pytest.raises(StoreClosed):
        s.write_events([event(1)])
    with pytest.raises(StoreClosed):
        s.flush()


# -- concurrency ---------------------------------------------------------------------------------------------


def test_reads_do_not_wait_for_an_open_write_transaction(store: SqliteStore) -> None:
    store.write_events([event(1)])
    store.flush()
    store.write_events([event(n) for n in range(2, 2000)])  # transaction left open, as between flushes

    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        page = pool.submit(store.query_events, EventQuery()).result(timeout=2)
        assert time.monotonic() - started < 1.0
    assert page.items == [event(1)]  # the last committed state


def test_concurrent_readers_while_the_processor_writes(store: SqliteStore) -> None:
    batches, per_batch = 40, 50
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            counter = itertools.count()
            for _ in range(batches):
                ns = [next(counter) for _ in range(per_batch)]
                store.write_events([event(n, device=f"dev-{n % 5}") for n in ns])
                store.write_violations([violation(n) for n in ns])
                store.flush()
        finally:
            done.set()

    def read() -> list[int]:
        sizes = []
        try:
            while not done.is_set():
                page = store.query_violations(ViolationQuery(limit=10_000))
                store.query_events(EventQuery(device_id="dev-3", limit=20))
                store.ping()
                sizes.append(len(page.items))
                # Whole batches only: a reader never sees half of a flushed batch.
                assert len(page.items) % per_batch == 0
        except BaseException as exc:
            errors.append(exc)
        return sizes

    with ThreadPoolExecutor(max_workers=4) as pool:
        readers = [pool.submit(read) for _ in range(3)]
        writer = pool.submit(write)
        writer.result(timeout=60)
        sizes = [r.result(timeout=60) for r in readers]

    assert errors == []
    for seen in sizes:
        assert seen == sorted(seen)  # what a reader saw never went backwards
    assert len(all_violations(store, ViolationQuery())) == batches * per_batch
