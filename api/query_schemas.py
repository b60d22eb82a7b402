"""Response models of the control-centre queries (aggregates and readings), as published in OpenAPI."""

from __future__ import annotations

from pydantic import BaseModel, Field

from api.schemas import EventOut
from store.base import Bucket, Dimension


class CountRowOut(BaseModel):
    bucket_start_ms: int = Field(description="Start of the bucket, epoch ms UTC.", examples=[1795651200000])
    group: dict[str, str] = Field(
        description="The value of each `group_by` dimension ('' when a violation lacks that tag).",
        examples=[{"type": "bin_overflow", "grid": "FT-11"}],
    )
    count: int = Field(description="Violations that started in the bucket.", examples=[12])


class CountsOut(BaseModel):
    bucket: Bucket
    group_by: list[Dimension]
    from_ms: int = Field(description="The range actually counted: `from` rounded down to a bucket start.")
    to_ms: int = Field(description="`to` rounded up to a bucket end.")
    rows: list[CountRowOut] = Field(description="Ordered by bucket, then group; empty buckets are left out.")


class TopRowOut(BaseModel):
    key: str = Field(examples=["cam-0042"])
    count: int = Field(examples=[318])


class TopOut(BaseModel):
    by: Dimension
    from_ms: int
    to_ms: int
    rows: list[TopRowOut] = Field(description="Most violations first; ties by key.")


class PointOut(BaseModel):
    time_ms: int = Field(examples=[1795651200000])
    value: float = Field(examples=[91.5])


class BucketOut(BaseModel):
    bucket_start_ms: int = Field(examples=[1795651200000])
    count: int = Field(examples=[60])
    mean: float = Field(examples=[63.2])
    min: float = Field(examples=[12.0])
    max: float = Field(examples=[97.5])


class SeriesOut(BaseModel):
    device_id: str = Field(examples=["bin-0007"])
    attribute: str = Field(examples=["fill_pct"])
    bucket: Bucket | None = Field(description="null for raw points.")
    points: list[PointOut] = Field(description="Raw readings, oldest first (when `bucket` is not set).")
    buckets: list[BucketOut] = Field(description="Per bucket, oldest first (when `bucket` is set).")
    truncated: bool = Field(description="`limit` cut the answer: ask again from the last time returned.")


class LatestPage(BaseModel):
    items: list[EventOut] = Field(description="The latest event of each device, by device id.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at the end.")
