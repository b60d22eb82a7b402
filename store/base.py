"""The store interface every backend implements (embedded SQLite now, InfluxDB later).

Writes are idempotent: an event id or violation id written twice is stored once, and a violation's
newer state (by `updated_time_ms`) replaces an older one, so at-least-once delivery never doubles data.
Queries page newest first with an opaque cursor (keyset pagination, stable under concurrent writes).
"""

from __future__ import annotations

import base64
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from citywatch.models import DeadLetter, Event, Prediction, Violation, ViolationStatus

T = TypeVar("T")


class InvalidCursor(ValueError):
    """A cursor that this store did not hand out (or from another query)."""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    # Pass back to get the next (older) page; None when this was the last one.
    next_cursor: str | None


@dataclass(frozen=True)
class ViolationQuery:
    types: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()
    status: ViolationStatus | None = None
    # Start time window [from_ms, to_ms) in event time.
    from_ms: int | None = None
    to_ms: int | None = None
    limit: int = 100
    cursor: str | None = None


@dataclass(frozen=True)
class EventQuery:
    device_id: str | None = None
    kind: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None
    limit: int = 100
    cursor: str | None = None


@dataclass(frozen=True)
class DeadLetterQuery:
    reason: str | None = None
    limit: int = 100
    cursor: str | None = None


def encode_cursor(time_ms: int, tiebreak: str) -> str:
    """Opaque cursor for keyset pagination on (time, tiebreak), newest first."""
    return base64.urlsafe_b64encode(json.dumps([time_ms, tiebreak]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        time_ms, tiebreak = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(time_ms, int) or not isinstance(tiebreak, str):
            raise ValueError("wrong types")
    except (ValueError, TypeError) as exc:
        raise InvalidCursor(f"cursor {cursor[:40]!r} is not one this API returned") from exc
    return time_ms, tiebreak


class Store(ABC):
    """A thread-safe store: one writer (the processor) and any number of readers (the API)."""

    @abstractmethod
    def write_events(self, events: Sequence[Event]) -> None: ...

    @abstractmethod
    def write_violations(self, violations: Sequence[Violation]) -> None:
        """Upsert by violation_id; a state with an older updated_time_ms never replaces a newer one."""

    @abstractmethod
    def write_dead_letters(self, dead_letters: Sequence[DeadLetter]) -> None: ...

    @abstractmethod
    def write_predictions(self, predictions: Sequence[Prediction]) -> None:
        """Upsert by (type, device_id); a forecast from older readings never replaces a newer one."""

    @abstractmethod
    def query_predictions(self, type: str, limit: int = 1000) -> list[Prediction]:
        """The newest forecast per device of a type, soonest predicted time first, none-yet last."""

    @abstractmethod
    def flush(self) -> None:
        """Everything written so far is durable when this returns."""

    @abstractmethod
    def query_violations(self, query: ViolationQuery) -> Page[Violation]: ...

    @abstractmethod
    def get_violation(self, violation_id: str) -> Violation | None: ...

    @abstractmethod
    def query_events(self, query: EventQuery) -> Page[Event]: ...

    @abstractmethod
    def query_dead_letters(self, query: DeadLetterQuery) -> Page[DeadLetter]: ...

    @abstractmethod
    def count_dead_letters_by_reason(self) -> dict[str, int]: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise if the store cannot answer (readiness)."""

    @abstractmethod
    def close(self) -> None: ...
