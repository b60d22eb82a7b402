"""Violation counts for control-centre dashboards: per time bucket and group, and the top N."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import StoreDep
from api.filters import RequiredFrom, RequiredTo, ViolationFilterDep, required_range_ms
from api.problems import invalid
from api.query_schemas import CountRowOut, CountsOut, TopOut, TopRowOut
from store import buckets
from store.base import Bucket, Dimension, TopQuery, ViolationCountQuery

router = APIRouter(prefix="/v1/aggregates", tags=["aggregates"])

MAX_TOP = 100
# Bounds the work of one request: a year of hours, or a week of minutes (see store.buckets.MAX_BUCKETS).
MAX_RANGE_DAYS = 366


@router.get(
    "/violations",
    response_model=CountsOut,
    summary="Violations counted per time bucket, grouped by dimensions",
    description="Counts violations by the bucket (UTC) of their start time. The range is widened to "
    "whole buckets; weeks start on Monday. Aggregates over hours or longer are answered from rollups.",
)
def count_violations(
    store: StoreDep,
    filter_: ViolationFilterDep,
    from_: RequiredFrom,
    to: RequiredTo,
    bucket: Annotated[
        Bucket, Query(description="Bucket size.", openapi_examples={"hour": {"value": "hour"}})
    ],
    group_by: Annotated[
        list[Dimension] | None,
        Query(
            description="Group by these dimensions; repeat for several.",
            openapi_examples={"type": {"value": ["type"]}, "grid and type": {"value": ["grid", "type"]}},
        ),
    ] = None,
) -> CountsOut:
    from_ms, to_ms = required_range_ms(from_, to, MAX_RANGE_DAYS)
    dims = tuple(dict.fromkeys(group_by or ()))
    rows = store.count_violations(
        ViolationCountQuery(bucket=bucket, from_ms=from_ms, to_ms=to_ms, group_by=dims, filter=filter_)
    )
    start, end = buckets.widen(from_ms, to_ms, bucket)
    return CountsOut(
        bucket=bucket,
        group_by=list(dims),
        from_ms=start,
        to_ms=end,
        rows=[
            CountRowOut(
                bucket_start_ms=r.bucket_start_ms, group=dict(zip(dims, r.group, strict=True)), count=r.count
            )
            for r in rows
        ],
    )


@router.get(
    "/violations/top",
    response_model=TopOut,
    summary="The devices (intersections, grids ...) with the most violations",
)
def top_violations(
    store: StoreDep,
    filter_: ViolationFilterDep,
    from_: RequiredFrom,
    to: RequiredTo,
    by: Annotated[
        Dimension,
        Query(
            description="Rank by this dimension.",
            openapi_examples={"device": {"value": "device"}, "intersection": {"value": "intersection"}},
        ),
    ] = Dimension.DEVICE,
    limit: Annotated[int, Query(ge=1, description=f"How many, at most {MAX_TOP}.")] = 10,
) -> TopOut:
    if limit > MAX_TOP:
        raise invalid("limit", f"must be at most {MAX_TOP}")
    from_ms, to_ms = required_range_ms(from_, to, MAX_RANGE_DAYS)
    rows = store.top_violations(
        TopQuery(dimension=by, from_ms=from_ms, to_ms=to_ms, limit=limit, filter=filter_)
    )
    return TopOut(
        by=by, from_ms=from_ms, to_ms=to_ms, rows=[TopRowOut(key=r.key, count=r.count) for r in rows]
    )
