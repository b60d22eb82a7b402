"""Violation filters shared by the list, the exports and the aggregates, validated with clear 422s."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Query
from pydantic import AwareDatetime

from api.params import to_epoch_ms
from store.base import BoundingBox, ViolationFilter

ATTRIBUTE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

MultiParam = Annotated[list[str] | None, Query()]


def violation_filter(
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
            raise HTTPException(422, f"`{name}` values must be 1 to 128 characters")
        if values is not None and len(values) > 100:
            raise HTTPException(422, f"at most 100 `{name}` values")
    allowed = {"low", "medium", "high", "critical"}
    if severity is not None and not set(severity) <= allowed:
        raise HTTPException(422, f"`severity` must be one of {', '.join(sorted(allowed))}")
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
        raise HTTPException(422, "`bbox` must be four numbers: min_lon,min_lat,max_lon,max_lat") from None
    if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise HTTPException(
            422, "`bbox` must satisfy -180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90"
        )
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
        raise HTTPException(422, "`from` must be earlier than `to`")
    if max_days is not None and to_ms - from_ms > max_days * 86_400_000:
        raise HTTPException(422, f"the time range may span at most {max_days} days")
    return from_ms, to_ms


def check_attribute(attribute: str) -> str:
    if not ATTRIBUTE_PATTERN.match(attribute):
        raise HTTPException(422, "`attribute` must be a name such as fill_pct (letters, digits, _)")
    return attribute
