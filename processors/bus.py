"""The bus between ingest and the processors.

Ingest sends events and dead letters; a processor polls batches, makes their results durable, then
commits. The in-process bus and the Kafka bus implement the same two small interfaces, so processor code
never knows which one it runs on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.models import DeadLetter, Event


class BusFull(Exception):
    """The bus did not take the items within the timeout: the producer must slow down (backpressure)."""


class BusClosed(Exception):
    """The bus was closed; nothing more can be sent."""


class BusEncodingError(Exception):
    """An item could not be encoded for the bus; nothing of that send was sent."""

    def __init__(self, item_id: str, cause: BaseException) -> None:
        super().__init__(f"{item_id}: {type(cause).__name__}: {cause}")
        self.item_id = item_id


# What msgspec raises for a value it cannot encode (an integer beyond 64 bits, a lone surrogate, ...).
ENCODING_ERRORS = (OverflowError, TypeError, ValueError, UnicodeError)


def encode_item(item: Event | DeadLetter, encode: Callable[[Any], bytes]) -> bytes:
    """`encode(item)`, or BusEncodingError naming the item."""
    try:
        return encode(item)
    except ENCODING_ERRORS as exc:
        name = f"event {item.event_id}" if isinstance(item, Event) else f"dead letter ({item.reason})"
        raise BusEncodingError(name, exc) from exc


@dataclass
class Batch:
    events: list[Event] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events) + len(self.dead_letters)


# Told once, from any thread, whether the items of one send are durable on the bus (None) or why not.
OnDurable = Callable[[BaseException | None], None]


class BusProducer(ABC):
    @abstractmethod
    def send(self, events: Sequence[Event], dead_letters: Sequence[DeadLetter] = (), *,
             timeout_s: float | None = None, on_durable: OnDurable | None = None) -> None:
        """Hand items to the bus; blocks while it is full, raises BusFull after `timeout_s`.

        `on_durable` is called once when every item of this call is on the bus (with None) or as soon as
        one was refused (with the error); never if send() raises.
        """

    @abstractmethod
    def flush(self, timeout_s: float | None = None) -> None:
        """Return once everything sent so far is on the bus."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; sending afterwards raises BusClosed."""


class BusConsumer(ABC):
    @abstractmethod
    def poll(self, max_items: int, timeout_s: float) -> Batch:
        """Up to `max_items` items; an empty batch after `timeout_s` when nothing arrived."""

    @abstractmethod
    def commit(self) -> None:
        """Everything polled so far is durable downstream: do not deliver it again after a restart."""

    @property
    @abstractmethod
    def drained(self) -> bool:
        """True once the bus is closed and every item was polled (a clean stop is complete)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
