"""The ingest child's producer: messages leave in batches the parent decodes as sent, each sender is told
once its batch is written (or that it could not be), an item the pipe cannot carry is refused by name, and
a full producer holds the sender back."""

from __future__ import annotations

import threading

import msgspec
import pytest

from citywatch.ingest_process import BATCH, PipeProducer
from core.models import DeadLetter, Event
from processors.bus import BusClosed, BusEncodingError, BusFull

DECODE = msgspec.msgpack.Decoder(list[tuple[list[Event], list[DeadLetter]]])


def event(n: int, **attributes: object) -> Event:
    return Event(event_id=f"e{n}", device_id="bin-1", kind="bin", event_time_ms=1_000 + n,
                 ingest_time_ms=1_000 + n, attributes=attributes or {"fill_pct": float(n)})


def letter(reason: str) -> DeadLetter:
    return DeadLetter(reason=reason, detail="", topic="t", payload=b"x", received_time_ms=1)


class Pipe:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[tuple[list[Event], list[DeadLetter]]]] = []
        self.fail = fail

    def write(self, message: bytes) -> None:
        if self.fail:
            raise OSError("the parent is gone")
        assert message[:1] == BATCH
        self.batches.append(DECODE.decode(message[1:]))


@pytest.mark.parametrize("messages", [1, 15, 16, 300, 70_000])  # the three sizes of msgpack array header
def test_what_is_sent_arrives_in_order_and_every_sender_hears_of_it(messages: int) -> None:
    pipe = Pipe()
    producer = PipeProducer(pipe.write, pending_items=100_000)
    told: list[BaseException | None] = []
    for n in range(messages):
        producer.send([event(n)], [letter("malformed_json")] if n % 7 == 0 else [], on_durable=told.append)
    producer.flush(10)
    received = [item for batch in pipe.batches for item in batch]
    assert [events[0].event_id for events, _ in received] == [f"e{n}" for n in range(messages)]
    assert sum(len(letters) for _, letters in received) == len(range(0, messages, 7))
    assert told == [None] * messages
    producer.close()


def test_an_item_the_pipe_cannot_carry_is_refused_by_name() -> None:
    producer = PipeProducer(Pipe().write)
    with pytest.raises(BusEncodingError, match="event e2"):
        producer.send([event(1), event(2, count=2 ** 70)])
    producer.close()


def test_a_write_that_fails_tells_the_senders_and_close_refuses_more() -> None:
    producer = PipeProducer(Pipe(fail=True).write)
    told: list[BaseException | None] = []
    producer.send([event(1)], on_durable=told.append)
    producer.flush(10)
    assert len(told) == 1 and isinstance(told[0], OSError)
    producer.close()
    with pytest.raises(BusClosed):
        producer.send([event(2)])


def test_a_full_producer_holds_the_sender_until_the_pipe_takes_its_items() -> None:
    entered, gate = threading.Event(), threading.Event()
    pipe = Pipe()

    def slow_write(message: bytes) -> None:
        entered.set()
        gate.wait(10)
        pipe.write(message)

    producer = PipeProducer(slow_write, pending_items=3, linger_s=0)
    producer.send([event(0)])
    assert entered.wait(5)  # the writer took it and waits at the gate
    for n in range(1, 4):
        producer.send([event(n)])
    with pytest.raises(BusFull):
        producer.send([event(4)], timeout_s=0.2)
    gate.set()
    producer.send([event(4)], timeout_s=5)
    producer.close()
    sent = [events[0].event_id for batch in pipe.batches for events, _ in batch]
    assert sent == [f"e{n}" for n in range(5)]
