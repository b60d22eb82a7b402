"""Violation filters evaluated in memory: what a stream client or a webhook subscription wants to see.

The same fields as the query API (type, grid, district, department, severity, bounding box, device,
status). Within a field the values are alternatives (OR); across fields all must match (AND); an empty
field matches everything. Grid, district and department come from the violation's tags, the bounding
box from its location (a violation without a location never matches a bounding box).

`events` says which kinds of change are wanted: violation changes (`violation`, the default) and case SLA
events (`case_sla_warning`, `case_sla_breach`, docs/alerts.md "Case SLA events"). A case event matches
on the case's type, grid, district, department and location; device, severity and status are violation
fields and do not restrict case events.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterator
from enum import StrEnum
from math import prod
from typing import Annotated, Any, Generic, Self, TypeVar

from fastapi import HTTPException, Query
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator
from starlette.requests import HTTPConnection

from api.alerts.strict import StrictModel, unknown_name
from api.violation_types import default_violation_types
from core.models import Severity, Violation, ViolationStatus
from processors.cases.sla import CaseEventKind, CaseSlaEvent
from processors.outputs.feed import FeedEntry


class EventKind(StrEnum):
    VIOLATION = "violation"
    CASE_SLA_WARNING = CaseEventKind.SLA_WARNING.value
    CASE_SLA_BREACH = CaseEventKind.SLA_BREACH.value


class BoundingBox(StrictModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_lon: float = Field(ge=-180, le=180)
    min_lat: float = Field(ge=-90, le=90)
    max_lon: float = Field(ge=-180, le=180)
    max_lat: float = Field(ge=-90, le=90)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min_lon > self.max_lon or self.min_lat > self.max_lat:
            raise ValueError("bbox must be min_lon,min_lat,max_lon,max_lat with min <= max")
        return self

    @classmethod
    def parse(cls, text: str) -> BoundingBox:
        parts = text.split(",")
        if len(parts) != 4:
            raise ValueError(f"bbox must be four numbers min_lon,min_lat,max_lon,max_lat, got {text!r}")
        try:
            min_lon, min_lat, max_lon, max_lat = (float(part) for part in parts)
        except ValueError:
            raise ValueError(
                f"bbox must be four numbers min_lon,min_lat,max_lon,max_lat, got {text!r}") from None
        return cls(min_lon=min_lon, min_lat=min_lat, max_lon=max_lon, max_lat=max_lat)

    def contains(self, lat: float, lon: float) -> bool:
        return self.min_lat <= lat <= self.max_lat and self.min_lon <= lon <= self.max_lon


class ViolationFilter(StrictModel):
    """Which violation changes to receive; stored as JSON with a webhook subscription."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: tuple[str, ...] = Field((), description="Violation types, e.g. bin_overflow.")
    grid: tuple[str, ...] = Field((), description="Grid tags, e.g. FT-11.")
    district: tuple[str, ...] = Field((), description="District tags.")
    department: tuple[str, ...] = Field((), description="Department tags, e.g. sanitation.")
    severity: tuple[Severity, ...] = Field((), description="Severities: low, medium, high, critical.")
    device: tuple[str, ...] = Field((), description="Device ids.")
    status: tuple[ViolationStatus, ...] = Field((), description="open (opened) and/or cleared changes.")
    bbox: BoundingBox | None = Field(None, description="Only violations located inside this box.")
    events: tuple[EventKind, ...] = Field((), description="Kinds of change: violation (violation "
                                          "changes), case_sla_warning, case_sla_breach; empty: violation.")

    @field_validator("severity", "status", "events", mode="before")
    @classmethod
    def _known_values(cls, value: object, info: ValidationInfo) -> object:
        enum: type[StrEnum] = {"severity": Severity, "status": ViolationStatus}.get(
            str(info.field_name), EventKind)
        if isinstance(value, list | tuple):
            valid = [member.value for member in enum]
            bad = [item for item in value if isinstance(item, str) and item not in valid]
            if bad:
                raise ValueError("; ".join(unknown_name(str(info.field_name), item, valid) for item in bad))
        return value

    @field_validator("bbox", mode="before")
    @classmethod
    def _bbox_from_text(cls, value: object) -> object:
        return BoundingBox.parse(value) if isinstance(value, str) else value

    def matches_entry(self, entry: FeedEntry) -> bool:
        """Whether a feed entry (a violation change or a case event) is wanted."""
        if entry.case_event is not None:
            event = entry.case_event
            return EventKind(event.kind.value) in self.events and self._matches_case(event)
        assert entry.violation is not None
        return (not self.events or EventKind.VIOLATION in self.events) and self.matches(entry.violation)

    def _matches_case(self, event: CaseSlaEvent) -> bool:
        case = event.case
        if self.type and case.type not in self.type:
            return False
        if self.grid and case.grid not in self.grid:
            return False
        if self.district and case.district not in self.district:
            return False
        if self.department and case.department not in self.department:
            return False
        return self.bbox is None or (case.lat is not None and case.lon is not None
                                     and self.bbox.contains(case.lat, case.lon))

    def matches(self, violation: Violation) -> bool:
        if self.type and violation.type not in self.type:
            return False
        if self.device and violation.device_id not in self.device:
            return False
        if self.severity and violation.severity not in self.severity:
            return False
        if self.status and violation.status not in self.status:
            return False
        tags = violation.tags
        if self.grid and tags.get("grid") not in self.grid:
            return False
        if self.district and tags.get("district") not in self.district:
            return False
        if self.department and tags.get("department") not in self.department:
            return False
        if self.bbox is not None:
            location = violation.location
            if location is None or not self.bbox.contains(location.lat, location.lon):
                return False
        return True


# The filter fields a FilterIndex looks up directly: each names exactly one value of a violation change.
_INDEXED_FIELDS = ("type", "device", "grid", "district", "department")
# A filter with more value combinations than this over its indexed fields is indexed on fewer of them (the
# fields left out are still checked by `matches_entry`), so one filter never fills the index.
_MAX_INDEX_KEYS = 256

Item = TypeVar("Item", bound=Hashable)
_Shape = tuple[int, ...]
_Key = tuple[str | None, ...]


def _indexed_values(violation: Violation) -> tuple[str | None, ...]:
    """A violation's value for each of _INDEXED_FIELDS, in that order."""
    tags = violation.tags
    return (violation.type, violation.device_id, tags.get("grid"), tags.get("district"),
            tags.get("department"))


class FilterIndex(Generic[Item]):
    """Items (webhook subscriptions, stream clients) by their filter, so that a change is checked only
    against the filters that can want it, not against every one.

    A filter is filed under the combinations of values it asks for in type, device, grid, district and
    department (its "shape" is the set of those fields it restricts): a change looks up its own values once
    per shape in use, and only the items found there are checked in full (`matches_entry`: severity,
    status, bounding box and the rest). With a thousand subscriptions each on one grid, a change is
    checked against the ten of its grid instead of a thousand. Case SLA events are rare and match on other
    fields: the items whose filter asks for them are checked in full.
    """

    def __init__(self) -> None:
        self._filters: dict[Item, ViolationFilter] = {}
        # Where each item is filed: its shape and its keys there (none when no violation change is wanted).
        self._where: dict[Item, tuple[_Shape, list[_Key]]] = {}
        # Per shape (the indexes of the restricted fields), items by their values in those fields.
        self._shapes: dict[_Shape, dict[_Key, dict[Item, None]]] = {}
        self._case_items: dict[Item, None] = {}

    def __len__(self) -> int:
        return len(self._filters)

    def __iter__(self) -> Iterator[Item]:
        return iter(list(self._filters))

    def add(self, item: Item, filter: ViolationFilter) -> None:
        """File `item` under `filter` (replacing the filter it had)."""
        self.remove(item)
        self._filters[item] = filter
        if any(kind is not EventKind.VIOLATION for kind in filter.events):
            self._case_items[item] = None
        if filter.events and EventKind.VIOLATION not in filter.events:
            self._where[item] = ((), [])  # no violation change is wanted
            return
        values = [getattr(filter, name) for name in _INDEXED_FIELDS]
        shape = [i for i, value in enumerate(values) if value]
        while prod(len(values[i]) for i in shape) > _MAX_INDEX_KEYS:
            shape.remove(max(shape, key=lambda i: len(values[i])))
        keys: list[_Key] = [()]
        for i in shape:
            keys = [(*key, value) for key in keys for value in values[i]]
        table = self._shapes.setdefault(tuple(shape), {})
        for key in keys:
            table.setdefault(key, {})[item] = None
        self._where[item] = (tuple(shape), keys)

    def remove(self, item: Item) -> None:
        filter = self._filters.pop(item, None)
        if filter is None:
            return
        self._case_items.pop(item, None)
        shape, keys = self._where.pop(item)
        if not keys:
            return
        table = self._shapes[shape]
        for key in keys:
            del table[key][item]
            if not table[key]:
                del table[key]
        if not table:
            del self._shapes[shape]

    def matching(self, entry: FeedEntry) -> list[Item]:
        """The items whose filter wants `entry`."""
        if entry.case_event is not None:
            return [item for item in self._case_items if self._filters[item].matches_entry(entry)]
        assert entry.violation is not None
        values = _indexed_values(entry.violation)
        found: list[Item] = []
        for shape, table in self._shapes.items():
            items = table.get(tuple([values[i] for i in shape]))
            if items:
                found.extend(item for item in items if self._filters[item].matches_entry(entry))
        return found


def refuse_unknown_types(filter: ViolationFilter, known: Collection[str], where: str) -> None:
    """A misspelt type would match nothing, silently: refuse it with the closest known type (422)."""
    unknown = [name for name in filter.type if name not in known]
    if unknown:
        raise HTTPException(422, f"{where}: " + "; ".join(
            unknown_name("violation type", name, known) for name in unknown))




def _enum_values(param: str, values: list[str], enum: type[StrEnum]) -> tuple[Any, ...]:
    valid = [member.value for member in enum]
    bad = [value for value in values if value not in valid]
    if bad:
        raise HTTPException(422, f"query parameter {param}: " + "; ".join(
            unknown_name(param, value, valid) for value in bad))
    return tuple(enum(value) for value in values)


def filter_from_query(
    connection: HTTPConnection,
    type: Annotated[list[str] | None, Query(description="Violation type; repeat for several.")] = None,
    grid: Annotated[list[str] | None, Query(description="Grid tag; repeat for several.")] = None,
    district: Annotated[list[str] | None, Query(description="District tag; repeat for several.")] = None,
    department: Annotated[list[str] | None, Query(description="Department tag; repeat for several.")] = None,
    severity: Annotated[list[str] | None, Query(
        description="Severity (low, medium, high, critical); repeat for several.")] = None,
    device: Annotated[list[str] | None, Query(description="Device id; repeat for several.")] = None,
    status: Annotated[list[str] | None, Query(description="open or cleared.")] = None,
    bbox: Annotated[str | None, Query(description="min_lon,min_lat,max_lon,max_lat (WGS84).")] = None,
    events: Annotated[list[str] | None, Query(
        description="Kinds of change: violation (the default), case_sla_warning, case_sla_breach; "
        "repeat for several.")] = None,
) -> ViolationFilter:
    """The filter as query parameters (a FastAPI dependency of the streams). Everything is checked
    here and refused with a 422 naming the closest valid name: an unknown severity, status or violation
    type, a bad bounding box. (Validated here rather than by FastAPI, so that a WebSocket
    handshake is refused with the same status and message as an SSE request.)"""
    # Unknown parameters are refused for every /v1 route and stream by api/strict_input.py.
    try:
        box = None if bbox is None else BoundingBox.parse(bbox)
    except ValueError as exc:
        raise HTTPException(422, f"query parameter bbox: {exc}") from exc
    violation_filter = ViolationFilter(
        type=tuple(type or ()), grid=tuple(grid or ()), district=tuple(district or ()),
        department=tuple(department or ()), severity=_enum_values("severity", severity or [], Severity),
        device=tuple(device or ()), status=_enum_values("status", status or [], ViolationStatus), bbox=box,
        events=_enum_values("events", events or [], EventKind))
    refuse_unknown_types(violation_filter, violation_types_of(connection), "query parameter type")
    return violation_filter


def violation_types_of(connection: HTTPConnection) -> frozenset[str]:
    """The city's violation types: the dispatcher knows the city's code table; without webhooks, the
    rules' types and the default table."""
    dispatcher = getattr(connection.state.services, "webhooks", None)
    types: frozenset[str] | None = getattr(dispatcher, "violation_types", None)
    return types if types is not None else default_violation_types()
