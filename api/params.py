"""Query parameters shared by list endpoints: time bounds and paging."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query
from pydantic import AwareDatetime

from api.deps import ServicesDep
from api.problems import invalid

FromParam = Annotated[
    AwareDatetime | None,
    Query(alias="from", description="Inclusive lower bound, RFC 3339 with offset (2026-11-26T08:00:00Z)."),
]
ToParam = Annotated[
    AwareDatetime | None,
    Query(alias="to", description="Exclusive upper bound, RFC 3339 with offset."),
]
CursorParam = Annotated[
    str | None,
    Query(min_length=1, description="`next_cursor` of the previous page; leave it out for the first page."),
]


def to_epoch_ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def time_range_ms(from_: datetime | None, to: datetime | None) -> tuple[int | None, int | None]:
    from_ms, to_ms = to_epoch_ms(from_), to_epoch_ms(to)
    if from_ms is not None and to_ms is not None and from_ms >= to_ms:
        raise invalid("from", "must be earlier than `to`")
    return from_ms, to_ms


def page_limit(
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, description="Page size, at most the configured maximum (1000).")] = 100,
) -> int:
    if limit > services.settings.max_page_size:
        raise invalid("limit", f"must be at most {services.settings.max_page_size}")
    return limit


LimitParam = Annotated[int, Depends(page_limit)]
