"""bench/e2e.py's latency summary: a stall shows in the seconds whose events it delayed."""

from __future__ import annotations

from bench.e2e import TimedStoredClock, slowest_by_second
from core.models import Event

SECOND_NS = 1_000_000_000


def test_the_slowest_event_of_each_second_sent_is_reported_for_that_second() -> None:
    sent = [0, SECOND_NS // 2, SECOND_NS, 2 * SECOND_NS + 1, 2 * SECOND_NS + 5]
    latencies = [3.0, 450.0, 4.0, 12.5, 7.0]
    assert slowest_by_second(sent, latencies) == [450.0, 4.0, 12.5]
    assert slowest_by_second([], []) == []


def test_the_clock_keeps_each_stored_events_send_time_beside_its_latency() -> None:
    clock = TimedStoredClock()
    events = [Event(event_id=f"e{n}", device_id="bin-1", kind="bin", event_time_ms=0, ingest_time_ms=0,
                    attributes={"sent_ns": n} if n != 1 else {}) for n in range(3)]
    clock(events)
    assert clock.sent_ns == [0, 2]  # the event without a send time (not the publisher's) is not counted
    assert len(clock.latencies_ms) == 2
    clock.reset()
    assert (clock.sent_ns, clock.latencies_ms) == ([], [])
