"""The store interface every backend implements (embedded SQLite, InfluxDB).

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
from enum import StrEnum
from typing import Generic, TypeVar

from core.models import (
    DeadLetter,
    Event,
    ExposureTotal,
    LifecycleEntry,
    Prediction,
    Violation,
    ViolationStatus,
)

T = TypeVar("T")


class InvalidCursor(ValueError):
    """A cursor that this store did not hand out (or from another query)."""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    # Pass back to get the next (older) page; None when this was the last one.
    next_cursor: str | None


class StoreUnavailable(RuntimeError):
    """The store could not be reached, or answered with a server error: retry later (an outage, not a bug
    of the query)."""


class QueryTooLarge(ValueError):
    """The answer would exceed the store's bound on result size; narrow the query."""


# The violation tags a query can filter and group on. Each is a tag of the device (from the registry) or of
# the violation, with a bounded set of values (never plates or track ids).
TAG_DIMENSIONS: tuple[str, ...] = ("grid", "district", "department", "intersection")


class Dimension(StrEnum):
    """What violation counts can be grouped by."""

    TYPE = "type"
    DEVICE = "device"
    SEVERITY = "severity"
    GRID = "grid"
    DISTRICT = "district"
    DEPARTMENT = "department"
    INTERSECTION = "intersection"


class Bucket(StrEnum):
    """Time buckets in UTC: weeks start on Monday, months on the first."""

    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@dataclass(frozen=True)
class BoundingBox:
    """Inclusive WGS84 box; violations without a location never match one."""

    min_lat: float
    min_lon: float
    max_lat: float
    max_lon: float


@dataclass(frozen=True)
class ViolationFilter:
    """Filters shared by the violation list and the aggregates; empty tuples mean "any"."""

    types: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    grids: tuple[str, ...] = ()
    districts: tuple[str, ...] = ()
    departments: tuple[str, ...] = ()
    intersections: tuple[str, ...] = ()

    def tag_values(self) -> dict[str, tuple[str, ...]]:
        return {"grid": self.grids, "district": self.districts, "department": self.departments,
                "intersection": self.intersections}


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
    severities: tuple[str, ...] = ()
    grids: tuple[str, ...] = ()
    districts: tuple[str, ...] = ()
    departments: tuple[str, ...] = ()
    intersections: tuple[str, ...] = ()
    bbox: BoundingBox | None = None
    # Only violations open at this event time: started at or before it and not cleared by then.
    open_at_ms: int | None = None

    def filter(self) -> ViolationFilter:
        return ViolationFilter(types=self.types, device_ids=self.device_ids, severities=self.severities,
                               grids=self.grids, districts=self.districts, departments=self.departments,
                               intersections=self.intersections)


@dataclass(frozen=True)
class ViolationCountQuery:
    """Violations counted by the bucket of their start time, in [from_ms, to_ms) widened to whole buckets."""

    bucket: Bucket
    from_ms: int
    to_ms: int
    group_by: tuple[Dimension, ...] = ()
    filter: ViolationFilter = ViolationFilter()


@dataclass(frozen=True)
class CountRow:
    bucket_start_ms: int
    # One value per `group_by` dimension, in its order.
    group: tuple[str, ...]
    count: int


@dataclass(frozen=True)
class TopQuery:
    """The `limit` values of `dimension` with the most violations started in [from_ms, to_ms)."""

    dimension: Dimension
    from_ms: int
    to_ms: int
    limit: int = 10
    filter: ViolationFilter = ViolationFilter()


@dataclass(frozen=True)
class TopRow:
    key: str
    count: int


@dataclass(frozen=True)
class ReadingSeriesQuery:
    """One device's numeric attribute over [from_ms, to_ms): raw points, or per bucket if `bucket` is set."""

    device_id: str
    attribute: str
    from_ms: int
    to_ms: int
    bucket: Bucket | None = None
    limit: int = 1000


@dataclass(frozen=True)
class ReadingPoint:
    time_ms: int
    value: float


@dataclass(frozen=True)
class ReadingBucket:
    bucket_start_ms: int
    count: int
    mean: float
    min: float
    max: float


@dataclass(frozen=True)
class ReadingSeries:
    points: list[ReadingPoint]
    buckets: list[ReadingBucket]
    # True when `limit` cut the answer short: ask again from the last time returned.
    truncated: bool


@dataclass(frozen=True)
class LatestReadingsQuery:
    """The latest event of every device of `kind` (only devices that reported `attribute`, when set),
    ordered by device id; `cursor` is the last device id of the previous page."""

    kind: str
    attribute: str | None = None
    limit: int = 1000
    cursor: str | None = None


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each kind of data is kept, in days of event time before `now`."""

    raw_readings_days: int
    rollup_days: int
    violations_days: int
    dead_letters_days: int


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


@dataclass(frozen=True)
class ExposureQuery:
    """Exposure totals summed over the local days [first_day, last_day] ("YYYY-MM-DD", both included) per
    place: `group_by` is one of core.exposures.PLACE_KINDS. A device without the grouping tag (a bin has no
    intersection) is left out of that grouping; every device counts towards "city"."""

    first_day: str
    last_day: str
    group_by: str
    # Only these counters; empty: all.
    counters: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExposureSum:
    # The device id, intersection, grid or district; "" for the city.
    place: str
    counter: str
    value: float


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
    def write_exposures(self, totals: Sequence[ExposureTotal]) -> None:
        """Upsert by (day, device_id, counter): the latest total written wins (totals, not increments)."""

    @abstractmethod
    def exposure_sums(self, query: ExposureQuery) -> list[ExposureSum]:
        """Sums of the stored totals per (place, counter), ordered by place then counter."""

    @abstractmethod
    def flush(self) -> None:
        """Everything written so far is durable when this returns."""

    @abstractmethod
    def query_violations(self, query: ViolationQuery) -> Page[Violation]: ...

    @abstractmethod
    def get_violation(self, violation_id: str) -> Violation | None: ...

    @abstractmethod
    def violation_history(self, violation_id: str) -> list[LifecycleEntry]:
        """The rule's state changes of a violation (opened, updated, cleared), oldest first; kept by the
        writer that upserts the violation, once per (violation, change, event time)."""

    @abstractmethod
    def query_events(self, query: EventQuery) -> Page[Event]: ...

    @abstractmethod
    def query_dead_letters(self, query: DeadLetterQuery) -> Page[DeadLetter]: ...

    @abstractmethod
    def count_dead_letters_by_reason(self) -> dict[str, int]: ...

    # -- the control-centre queries (same answers on every backend) -----------------------------------------

    @abstractmethod
    def count_violations(self, query: ViolationCountQuery) -> list[CountRow]:
        """Rows ordered by bucket, then group; empty buckets are left out."""

    @abstractmethod
    def top_violations(self, query: TopQuery) -> list[TopRow]:
        """Ordered by count descending, then key ascending; violations without the dimension are left out."""

    @abstractmethod
    def reading_series(self, query: ReadingSeriesQuery) -> ReadingSeries:
        """Raw points or buckets in ascending time; a non-numeric or missing value is left out."""

    @abstractmethod
    def latest_readings(self, query: LatestReadingsQuery) -> Page[Event]: ...

    @abstractmethod
    def apply_retention(self, now_ms: int) -> None:
        """Delete what is older than the retention policy allows (rollups outlive raw readings)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise if the store cannot answer (readiness)."""

    def start(self) -> None:  # noqa: B027 - optional hook, most stores have no background work
        """Start background work (sending, rollups); a store without any need not override this."""

    @abstractmethod
    def close(self) -> None: ...
