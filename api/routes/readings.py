"""Readings: one device's time series, and the latest reading of every device of a kind (dispatch)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, HTTPException, Query

from api.deps import ServicesDep, StoreDep
from api.filters import RequiredFrom, RequiredTo, check_attribute, required_range_ms
from api.personal_data import RoutedData
from api.query_schemas import BucketOut, LatestPage, PointOut, SeriesOut
from api.schemas import EventOut
from core.masking import EVENTS
from store.base import Bucket, LatestReadingsQuery, ReadingSeriesQuery

router = APIRouter(prefix="/v1/readings", tags=["readings"])

MAX_POINTS = 10_000
MAX_RANGE_DAYS = 366


@router.get(
    "/latest",
    response_model=LatestPage,
    summary="The latest reading of every device of a kind",
    description="E.g. every bin with its fill level, for dispatch: `kind=bin&attribute=fill_pct`. Plates "
    "and evidence links in the readings are masked without the `plates` scope.",
)
def latest_readings(
    store: StoreDep,
    services: ServicesDep,
    personal: RoutedData,
    kind: Annotated[
        str,
        Query(
            min_length=1,
            max_length=64,
            description="Device kind.",
            openapi_examples={"bins": {"value": "bin"}},
        ),
    ],
    attribute: Annotated[
        str | None,
        Query(
            description="Only devices whose latest reading has it.",
            openapi_examples={"fill": {"value": "fill_pct"}},
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, description="Page size, at most the configured maximum.")] = 1000,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> LatestPage:
    if limit > services.settings.max_page_size:
        raise HTTPException(422, f"limit must be at most {services.settings.max_page_size}")
    if attribute is not None:
        check_attribute(attribute)
    page = store.latest_readings(
        LatestReadingsQuery(kind=kind, attribute=attribute, limit=limit, cursor=cursor)
    )
    return LatestPage(
        items=[EventOut.model_validate(msgspec.to_builtins(e)) for e in personal.show(page.items, EVENTS)],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/{device_id}/series",
    response_model=SeriesOut,
    summary="One device's attribute over time",
    description="Raw readings oldest first, or with `bucket` the count, mean, min and max per bucket "
    "(hourly and longer buckets come from rollups, which outlive raw readings).",
)
def reading_series(
    device_id: str,
    store: StoreDep,
    attribute: Annotated[
        str, Query(description="Numeric attribute.", openapi_examples={"fill": {"value": "fill_pct"}})
    ],
    from_: RequiredFrom,
    to: RequiredTo,
    bucket: Annotated[Bucket | None, Query(description="Aggregate per bucket; unset for raw points.")] = None,
    limit: Annotated[int, Query(ge=1, description=f"Most points or buckets, at most {MAX_POINTS}.")] = 1000,
) -> SeriesOut:
    if limit > MAX_POINTS:
        raise HTTPException(422, f"limit must be at most {MAX_POINTS}")
    check_attribute(attribute)
    from_ms, to_ms = required_range_ms(from_, to, MAX_RANGE_DAYS)
    series = store.reading_series(
        ReadingSeriesQuery(
            device_id=device_id, attribute=attribute, from_ms=from_ms, to_ms=to_ms, bucket=bucket, limit=limit
        )
    )
    return SeriesOut(
        device_id=device_id,
        attribute=attribute,
        bucket=bucket,
        points=[PointOut(time_ms=p.time_ms, value=p.value) for p in series.points],
        buckets=[
            BucketOut(bucket_start_ms=b.bucket_start_ms, count=b.count, mean=b.mean, min=b.min, max=b.max)
            for b in series.buckets
        ],
        truncated=series.truncated,
    )
