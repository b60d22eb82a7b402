"""The feed, the filters, masking and the rate limiter, each on its own."""

from __future__ import annotations

import random
import threading

import pytest

from api.access.ratelimit import RateLimiter
from api.alerts.filters import BoundingBox, ViolationFilter
from api.alerts.webhooks.signing import signature_header, verify
from core.masking import mask_plate, present_violation
from core.models import Severity, ViolationStatus
from processors.cases.sla import CaseEventKind, CaseSlaEvent
from processors.outputs.feed import BLOCK_SIZE, CursorExpired, InvalidFeedCursor, ViolationFeed
from tests.support.alerts import violation
from tests.unit.test_case_sla_events import CASE


def test_the_feed_numbers_changes_and_drops_replays() -> None:
    feed = ViolationFeed(100, epoch=7)
    seen: list[int] = []
    feed.add_listener(lambda entries: seen.extend(e.seq for e in entries))
    first = feed.publish([violation(1), violation(2)])
    assert [e.seq for e in first] == [1, 2] and [e.change for e in first] == ["opened", "opened"]
    assert feed.publish([violation(1)]) == []  # the same change replayed
    cleared = feed.publish([violation(1, status=ViolationStatus.CLEARED, updated_offset_ms=500)])
    assert [(e.seq, e.change) for e in cleared] == [(3, "cleared")]
    assert seen == [1, 2, 3] and feed.replays_dropped == 1
    assert cleared[0].idempotency_key == f"v0001:cleared:{violation(1).updated_time_ms + 500}"


def test_reading_after_a_cursor_within_and_beyond_the_window() -> None:
    feed = ViolationFeed(5, epoch=7)
    feed.publish([violation(n) for n in range(1, 13)])  # 8..12 are held
    assert [e.seq for e in feed.read_after(7, 100)] == [8, 9, 10, 11, 12]
    assert [e.seq for e in feed.read_after(9, 2)] == [10, 11]
    assert feed.read_after(12, 100) == []
    with pytest.raises(CursorExpired, match="no longer held"):
        feed.read_after(6, 100)
    assert feed.parse_cursor(feed.cursor(9)) == 9 and feed.cursor(9) == "7-9"
    with pytest.raises(CursorExpired, match="earlier run"):
        feed.parse_cursor("6-9")
    for bad in ("7-99", "x", "7-"):
        with pytest.raises(InvalidFeedCursor):
            feed.parse_cursor(bad)
    assert feed.oldest_seq == 8


def test_a_client_resuming_from_far_back_reads_the_changes_as_published() -> None:
    # Far enough back that the first changes were compacted (the newest `hot` stay as the objects
    # published); case events among them; reads that cross block boundaries and repeat.
    feed = ViolationFeed(6 * BLOCK_SIZE, hot=BLOCK_SIZE, epoch=7)
    published = []
    for n in range(1, 5 * BLOCK_SIZE + 300, 100):
        published += feed.publish([violation(m, plate=None if m % 3 else "粤B12345")
                                   for m in range(n, n + 99)])
        published += feed.publish_case_events([CaseSlaEvent(CaseEventKind.SLA_WARNING, CASE, n, n + 1)])
    assert [e.seq for e in published] == list(range(1, len(published) + 1))
    assert feed.read_after(0, len(published)) == published
    for start, limit in [(BLOCK_SIZE - 3, 7), (0, 500), (2 * BLOCK_SIZE, BLOCK_SIZE + 1), (10, 0),
                         (len(published) - 5, 100), (3 * BLOCK_SIZE - 1, 1), (0, 500)]:
        assert feed.read_after(start, limit) == published[start:start + limit], (start, limit)
    assert all(read is held for read, held in zip(feed.read_after(len(published) - BLOCK_SIZE, BLOCK_SIZE),
                                                  published[-BLOCK_SIZE:], strict=True))
    late = published[BLOCK_SIZE + 5]
    assert late.message(feed.cursor(late.seq), {}) == feed.read_after(late.seq - 1, 1)[0].message(
        feed.cursor(late.seq), {})


def test_the_window_moves_over_compacted_changes_and_replays_stay_dropped() -> None:
    feed = ViolationFeed(2 * BLOCK_SIZE + 10, epoch=7)
    feed.publish([violation(n) for n in range(1, 5 * BLOCK_SIZE + 1)])
    oldest = 5 * BLOCK_SIZE - (2 * BLOCK_SIZE + 10) + 1
    assert feed.oldest_seq == oldest
    assert [e.seq for e in feed.read_after(oldest - 1, 3)] == [oldest, oldest + 1, oldest + 2]
    assert feed.read_after(oldest - 1, 1)[0].violation == violation(oldest)
    with pytest.raises(CursorExpired, match="no longer held"):
        feed.read_after(oldest - 2, 1)
    # The replay check remembers twice the window: a change from just inside it is still a replay.
    assert feed.publish([violation(5 * BLOCK_SIZE - 2 * (2 * BLOCK_SIZE + 10) + 1)]) == []
    assert feed.publish([violation(5 * BLOCK_SIZE - 2 * (2 * BLOCK_SIZE + 10))]) != []


def test_readers_see_the_published_changes_while_blocks_are_compacted_under_them() -> None:
    feed = ViolationFeed(4 * BLOCK_SIZE, epoch=7)
    total = 12 * BLOCK_SIZE
    wrong: list[tuple[int, str | None]] = []
    failures: list[str] = []

    def read_until_done() -> None:
        rng = random.Random(threading.get_ident())
        while feed.last_seq < total:
            last = feed.last_seq
            start = max(0, last - rng.randrange(4 * BLOCK_SIZE))
            try:
                entries = feed.read_after(start, 700)
            except CursorExpired:
                continue  # the window moved on between reading last_seq and reading after it
            except Exception as exc:  # a reader that failed must fail the test, not end its thread quietly
                failures.append(repr(exc))
                return
            wrong.extend((e.seq, e.violation and e.violation.violation_id) for e in entries
                         if e.violation != violation(e.seq))

    readers = [threading.Thread(target=read_until_done) for _ in range(3)]
    for reader in readers:
        reader.start()
    for n in range(1, total + 1, 64):
        feed.publish([violation(m) for m in range(n, n + 64)])
    for reader in readers:
        reader.join(timeout=30)
    assert failures == [] and wrong == [] and feed.last_seq == total


def test_a_failing_listener_does_not_stop_the_others() -> None:
    feed = ViolationFeed(10)
    got: list[int] = []

    def broken(entries: object) -> None:
        raise RuntimeError("consumer bug")

    feed.add_listener(broken)
    feed.add_listener(lambda entries: got.extend(e.seq for e in entries))
    feed.publish([violation(1)])
    assert got == [1]


@pytest.mark.parametrize(("filter", "matches"), [
    (ViolationFilter(), True),
    (ViolationFilter(type=("parking",)), True),
    (ViolationFilter(type=("bin_overflow",)), False),
    (ViolationFilter(grid=("FT-11", "FT-12")), True),
    (ViolationFilter(grid=("LH-02",)), False),
    (ViolationFilter(district=("futian",), department=("traffic",)), True),
    (ViolationFilter(district=("futian",), department=("sanitation",)), False),
    (ViolationFilter(severity=(Severity.HIGH, Severity.CRITICAL)), False),
    (ViolationFilter(severity=(Severity.MEDIUM,)), True),
    (ViolationFilter(device=("cam-1",)), True),
    (ViolationFilter(device=("cam-2",)), False),
    (ViolationFilter(status=(ViolationStatus.CLEARED,)), False),
    (ViolationFilter(bbox=BoundingBox.parse("114.0,22.5,114.1,22.6")), True),
    (ViolationFilter(bbox=BoundingBox.parse("113.0,22.5,113.9,22.6")), False),
])
def test_filters(filter: ViolationFilter, matches: bool) -> None:
    assert filter.matches(violation(1)) is matches


def test_a_filter_round_trips_through_json_and_rejects_a_bad_box() -> None:
    f = ViolationFilter(grid=("FT-11",), bbox="114.0,22.5,114.1,22.6")  # type: ignore[arg-type]
    assert ViolationFilter.model_validate_json(f.model_dump_json()) == f
    for bad in ("1,2,3", "a,b,c,d", "114.1,22.5,114.0,22.6", "200,0,201,1"):
        with pytest.raises(ValueError):
            BoundingBox.parse(bad)


def test_plates_and_evidence_links_are_masked_without_the_scope() -> None:
    assert mask_plate("粤B12345") == "粤B1****"
    assert mask_plate("AB") == "AB*"
    v = violation(1)
    masked = present_violation(v, plates=False)
    assert masked["evidence"]["plate"] == "粤B1****" and masked["evidence"]["snapshot_url"] is None
    assert masked["evidence"]["details"] == {"dwell_s": 300}
    assert present_violation(v, plates=True)["evidence"]["plate"] == "粤B12345"
    assert v.evidence.plate == "粤B12345"  # the stored value is untouched


def test_the_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k") == pytest.approx(0.5)
    assert limiter.acquire("other") == 0.0  # per key
    now[0] = 0.5
    assert limiter.acquire("k") == 0.0
    assert limiter.acquire("k") > 0


def test_signatures_verify_and_expire() -> None:
    body = b'{"id": "1-1"}'
    header = signature_header("s3cret-s3cret-s3cret", 1_000, body)
    assert verify("s3cret-s3cret-s3cret", header, body, now_s=1_100)
    assert not verify("s3cret-s3cret-s3cret", header, body, now_s=1_000 + 301)  # replayed too late
    assert not verify("s3cret-s3cret-s3cret", "t=1000,v1=00", body, now_s=1_000)
    assert not verify("s3cret-s3cret-s3cret", "garbage", body, now_s=1_000)


def test_mqtt_output_topics_keep_tag_values_to_one_level() -> None:
    from processors.outputs.feed import FeedEntry
    from processors.outputs.mqtt_out import violation_topic

    def topic(**kwargs: object) -> str:
        return violation_topic("citywatch/violations/", FeedEntry(1, violation(1, **kwargs), 0))  # type: ignore[arg-type]

    assert topic() == "citywatch/violations/parking/FT-11"
    assert topic(grid="a/b+#") == "citywatch/violations/parking/a_b__"
    assert topic(grid="") == "citywatch/violations/parking/_"
