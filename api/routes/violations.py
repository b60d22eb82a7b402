"""Violations: the list a control centre or dispatcher works from, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.access.deps import AccessDep, ViolationReader
from api.deps import StoreDep
from api.params import CursorParam, FromParam, LimitParam, ToParam, time_range_ms
from api.schemas import ViolationOut, ViolationPage
from citywatch.models import ViolationStatus
from store.base import ViolationQuery

router = APIRouter(prefix="/v1/violations", tags=["violations"])


@router.get("", response_model=ViolationPage, summary="List violations, newest first")
def list_violations(
    store: StoreDep,
    reader: ViolationReader,
    access: AccessDep,
    type: Annotated[list[str] | None, Query(description="Violation type; repeat for several.")] = None,
    device: Annotated[list[str] | None, Query(description="Device id; repeat for several.")] = None,
    status: Annotated[ViolationStatus | None, Query(description="open or cleared")] = None,
    from_: FromParam = None,
    to: ToParam = None,
    limit: LimitParam = 100,
    cursor: CursorParam = None,
) -> ViolationPage:
    from_ms, to_ms = time_range_ms(from_, to)
    query = ViolationQuery(types=tuple(type or ()), device_ids=tuple(device or ()), status=status,
                           from_ms=from_ms, to_ms=to_ms, limit=limit, cursor=cursor)
    page = store.query_violations(query)
    items = access.present(reader, page.items, "GET /v1/violations")
    return ViolationPage(items=[ViolationOut.model_validate(item) for item in items],
                         next_cursor=page.next_cursor)


@router.get("/{violation_id}", response_model=ViolationOut, summary="One violation with its evidence",
            responses={404: {"description": "No violation with that id"}})
def get_violation(violation_id: str, store: StoreDep, reader: ViolationReader,
                  access: AccessDep) -> ViolationOut:
    violation = store.get_violation(violation_id)
    if violation is None:
        raise HTTPException(404, f"no violation {violation_id!r}")
    [item] = access.present(reader, [violation], f"GET /v1/violations/{violation_id}")
    return ViolationOut.model_validate(item)
