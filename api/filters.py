"""Violation filters shared by the list, the exports and the aggregates, validated with clear 422s."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query
from pydantic import AwareDatetime

from api.deps import StoreDep
from api.params import to_epoch_ms
from api.problems import INVALID_INPUT, FieldProblem, ProblemError, describe_errors, invalid
from api.strict_input import closest, unknown_name_message
from api.violation_types import default_violation_types
from store.base import BoundingBox, Store, ViolationFilter, ViolationQuery

ATTRIBUTE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

MultiParam = Annotated[list[str] | None, Query()]


def check_violation_types(store: Store, types: list[str]) -> None:
    """A type is known when a rule emits it, when the default code table names it, or when a stored
    violation has it (smart cameras report types of their own, e.g. from a city's code table). Anything
    else is a typo that would match nothing."""
    known = default_violation_types()
    errors = []
    for name in dict.fromkeys(types):
        if name in known or store.query_violations(ViolationQuery(types=(name,), limit=1)).items:
            continue
        suggestion = closest(name, known)
        errors.append(FieldProblem(location="query", field="type", closest=suggestion,
                                   message=unknown_name_message(f"violation type `{name}`", suggestion)))
    if errors:
        raise ProblemError(INVALID_INPUT, describe_errors(errors), errors=errors)


def violation_filter(
    store: StoreDep,
    type: Annotated[
        list[str] | None,
        Query(
            description="Violation type; repeat for several.",
            openapi_examples={"one": {"value": ["bin_overflow"]}},
        ),
    ] = None,
    device: Annotated[list[str] | None, Query(description="Device id; repeat for several.")] = None,
    severity: Annotated[
        list[str] | None, Query(description="low, medium, high or critical; repeatable.")
    ] = None,
    grid: Annotated[
        list[str] | None,
        Query(description="Grid tag; repeatable.", openapi_examples={"one": {"value": ["FT-11"]}}),
    ] = None,
    district: Annotated[list[str] | None, Query(description="District tag; repeatable.")] = None,
    department: Annotated[list[str] | None, Query(description="Department tag; repeatable.")] = None,
    intersection: Annotated[list[str] | None, Query(description="Intersection tag; repeatable.")] = None,
) -> ViolationFilter:
    for name, values in (
        ("type", type),
        ("device", device),
        ("grid", grid),
        ("district", district),
        ("department", department),
        ("intersection", intersection),
    ):
        if values is not None and any(not value or len(value) > 128 for value in values):
            raise invalid(name, "values must be 1 to 128 characters")
        if values is not None and len(values) > 100:
            raise invalid(name, "at most 100 values")
    allowed = {"low", "medium", "high", "critical"}
    for value in severity or ():
        if value not in allowed:
            raise invalid("severity", f"`{value}` is not one of {', '.join(sorted(allowed))}",
                          closest=closest(value, allowed))
    if type:
        check_violation_types(store, type)
    return ViolationFilter(
        types=tuple(type or ()),
        device_ids=tuple(device or ()),
        severities=tuple(severity or ()),
        grids=tuple(grid or ()),
        districts=tuple(district or ()),
        departments=tuple(department or ()),
        intersections=tuple(intersection or ()),
    )


ViolationFilterDep = Annotated[ViolationFilter, Depends(violation_filter)]


def bounding_box(
    bbox: Annotated[
        str | None,
        Query(
            description="min_lon,min_lat,max_lon,max_lat (WGS84, the GeoJSON order); violations without a "
            "location never match.",
            openapi_examples={"futian": {"value": "114.00,22.50,114.10,22.56"}},
        ),
    ] = None,
) -> BoundingBox | None:
    if bbox is None:
        return None
    try:
        min_lon, min_lat, max_lon, max_lat = (float(part) for part in bbox.split(","))
    except ValueError:
        raise invalid("bbox", "must be four numbers: min_lon,min_lat,max_lon,max_lat") from None
    if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise invalid("bbox", "must satisfy -180 <= min_lon <= max_lon <= 180 and "
                              "-90 <= min_lat <= max_lat <= 90")
    return BoundingBox(min_lat=min_lat, min_lon=min_lon, max_lat=max_lat, max_lon=max_lon)


BoundingBoxDep = Annotated[BoundingBox | None, Depends(bounding_box)]

RequiredFrom = Annotated[
    AwareDatetime,
    Query(
        alias="from",
        description="Inclusive lower bound, RFC 3339 with offset.",
        openapi_examples={"utc": {"value": "2026-11-01T00:00:00Z"}},
    ),
]
RequiredTo = Annotated[
    AwareDatetime,
    Query(
        alias="to",
        description="Exclusive upper bound, RFC 3339 with offset.",
        openapi_examples={"utc": {"value": "2026-12-01T00:00:00Z"}},
    ),
]


def required_range_ms(from_: datetime, to: datetime, max_days: int | None = None) -> tuple[int, int]:
    from_ms, to_ms = to_epoch_ms(from_), to_epoch_ms(to)
    assert from_ms is not None and to_ms is not None
    if from_ms >= to_ms:
        raise invalid("from", "must be earlier than `to`")
    if max_days is not None and to_ms - from_ms > max_days * 86_400_000:
        raise invalid("to", f"the time range may span at most {max_days} days")
    return from_ms, to_ms


def check_attribute(attribute: str) -> str:
    if not ATTRIBUTE_PATTERN.match(attribute):
        raise invalid("attribute", "must be a name such as fill_pct (letters, digits, _)")
    return attribute
