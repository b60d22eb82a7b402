"""Violation filters evaluated in memory: what a stream client or a webhook subscription wants to see.

The same fields as the query API (type, grid, district, department, severity, bounding box, device,
status). Within a field the values are alternatives (OR); across fields all must match (AND); an empty
field matches everything. Grid, district and department come from the violation's tags, the bounding
box from its location (a violation without a location never matches a bounding box).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Self

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citywatch.models import Severity, Violation, ViolationStatus


class BoundingBox(BaseModel):
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


class ViolationFilter(BaseModel):
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

    @field_validator("bbox", mode="before")
    @classmethod
    def _bbox_from_text(cls, value: object) -> object:
        return BoundingBox.parse(value) if isinstance(value, str) else value

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


def _tuple(values: Sequence[str] | None) -> tuple[str, ...]:
    return tuple(values or ())


def filter_from_query(
    type: Annotated[list[str] | None, Query(description="Violation type; repeat for several.")] = None,
    grid: Annotated[list[str] | None, Query(description="Grid tag; repeat for several.")] = None,
    district: Annotated[list[str] | None, Query(description="District tag; repeat for several.")] = None,
    department: Annotated[list[str] | None, Query(description="Department tag; repeat for several.")] = None,
    severity: Annotated[list[Severity] | None, Query(description="Severity; repeat for several.")] = None,
    device: Annotated[list[str] | None, Query(description="Device id; repeat for several.")] = None,
    status: Annotated[list[ViolationStatus] | None, Query(description="open or cleared.")] = None,
    bbox: Annotated[str | None, Query(description="min_lon,min_lat,max_lon,max_lat (WGS84).")] = None,
) -> ViolationFilter:
    """The filter as query parameters (a FastAPI dependency); a bad bounding box answers 422."""
    from fastapi import HTTPException

    try:
        box = None if bbox is None else BoundingBox.parse(bbox)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    return ViolationFilter(type=_tuple(type), grid=_tuple(grid), district=_tuple(district),
                           department=_tuple(department), severity=tuple(severity or ()),
                           device=_tuple(device), status=tuple(status or ()), bbox=box)
