"""Violations: the list a control centre or dispatcher works from, newest first."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import AwareDatetime

from api.deps import StoreDep, ViolationActionsDep
from api.filters import BoundingBoxDep, ViolationFilterDep
from api.params import CursorParam, FromParam, LimitParam, ToParam, time_range_ms, to_epoch_ms
from api.personal_data import ViolationData
from api.schemas import HandlingOut, ViolationPage, ViolationView
from api.violation_actions import Handling, ViolationActions
from core.masking import VIOLATIONS
from core.models import Violation, ViolationStatus
from store.base import ViolationQuery

router = APIRouter(prefix="/v1/violations", tags=["violations"])

StatusParam = Annotated[ViolationStatus | None, Query(description="open (open now) or cleared")]
OpenAtParam = Annotated[AwareDatetime | None, Query(
    description="Only violations open at this time: started at or before it and not yet cleared then.",
    openapi_examples={"morning": {"value": "2026-11-26T08:00:00+08:00"}},
)]


def violation_selection(
    filter_: ViolationFilterDep,
    bbox: BoundingBoxDep,
    status: StatusParam = None,
    open_at: OpenAtParam = None,
    from_: FromParam = None,
    to: ToParam = None,
) -> ViolationQuery:
    """Which violations a request selects (every filter the list and the exports share); the caller sets
    the page size and cursor."""
    from_ms, to_ms = time_range_ms(from_, to)
    return ViolationQuery(
        types=filter_.types, device_ids=filter_.device_ids, severities=filter_.severities,
        grids=filter_.grids, districts=filter_.districts, departments=filter_.departments,
        intersections=filter_.intersections, status=status, open_at_ms=to_epoch_ms(open_at), bbox=bbox,
        from_ms=from_ms, to_ms=to_ms,
    )


ViolationSelection = Annotated[ViolationQuery, Depends(violation_selection)]


@router.get("", response_model=ViolationPage, summary="List violations, newest first")
def list_violations(
    store: StoreDep,
    actions: ViolationActionsDep,
    personal: ViolationData,
    selection: ViolationSelection,
    limit: LimitParam = 100,
    cursor: CursorParam = None,
) -> ViolationPage:
    query = dataclasses.replace(selection, limit=limit, cursor=cursor)
    page = store.query_violations(query)
    return ViolationPage(items=views(personal.show(page.items, VIOLATIONS), actions),
                         next_cursor=page.next_cursor)


@router.get("/{violation_id}", response_model=ViolationView, summary="One violation with its evidence",
            responses={404: {"description": "No violation with that id"}})
def get_violation(violation_id: str, store: StoreDep, actions: ViolationActionsDep,
                  personal: ViolationData) -> ViolationView:
    violation = store.get_violation(violation_id)
    if violation is None:
        raise HTTPException(404, f"no violation {violation_id!r}")
    [view] = views(personal.show([violation], VIOLATIONS), actions)
    return view


def views(violations: list[Violation], actions: ViolationActions) -> list[ViolationView]:
    """The violations with what people did about them (one query to the relational database a page)."""
    handling = actions.handling([v.violation_id for v in violations])
    return [ViolationView.model_validate({
        **msgspec.to_builtins(v),
        "handling": HandlingOut.model_validate(dataclasses.asdict(handling.get(v.violation_id, Handling()))),
    }) for v in violations]
