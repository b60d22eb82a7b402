"""The in-process bus of `citywatch up`: items come out in the order they went in, a full bus holds the
producer back (never drops), a timeout says the bus is full, and a closed bus refuses new items while the
consumer still drains what it holds."""

from __future__ import annotations

import threading

import pytest

from core.models import Event
from processors.bus import BusClosed, BusFull
from processors.inprocess_bus import InProcessBus


def reading(n: int) -> Event:
    return Event(event_id=f"e{n}", device_id="bin-1", kind="bin", event_time_ms=n, ingest_time_ms=n,
                 attributes={"fill_pct": float(n)})


def taken_ids(bus: InProcessBus, max_items: int = 100) -> list[str]:
    return [event.event_id for event in bus.consumer().poll(max_items, 0.01).events]


def test_items_come_out_in_the_order_they_were_sent() -> None:
    bus = InProcessBus(10)
    producer = bus.producer()
    producer.send([reading(1), reading(2)])
    producer.send([reading(3)])
    assert taken_ids(bus, 2) == ["e1", "e2"]
    assert taken_ids(bus) == ["e3"]


def test_a_send_larger_than_the_room_left_waits_for_the_consumer_and_loses_nothing() -> None:
    bus = InProcessBus(3)
    producer = bus.producer()
    producer.send([reading(1), reading(2)])
    sent = threading.Event()
    sender = threading.Thread(target=lambda: (producer.send([reading(n) for n in range(3, 7)]), sent.set()))
    sender.start()
    assert not sent.wait(0.2)  # four more do not fit beside two in a bus of three
    seen: list[str] = []
    while len(seen) < 6:
        seen += taken_ids(bus, 2)
    sender.join(5)
    assert sent.is_set() and seen == [f"e{n}" for n in range(1, 7)]


def test_a_full_bus_refuses_after_the_timeout() -> None:
    bus = InProcessBus(1)
    producer = bus.producer()
    producer.send([reading(1)])
    with pytest.raises(BusFull, match="in-process bus full"):
        producer.send([reading(2)], timeout_s=0.05)
    assert taken_ids(bus) == ["e1"]


def test_a_closed_bus_refuses_new_items_and_still_gives_what_it_holds() -> None:
    bus = InProcessBus(10)
    producer = bus.producer()
    producer.send([reading(1)])
    bus.close()
    with pytest.raises(BusClosed, match="in-process bus is closed"):
        producer.send([reading(2)])
    assert taken_ids(bus) == ["e1"]
    assert bus.drained
