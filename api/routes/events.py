"""Stored events (normalised readings), newest first; plates and evidence links in them only with `plates`."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Query

from api.deps import StoreDep
from api.params import CursorParam, FromParam, LimitParam, ToParam, time_range_ms
from api.personal_data import RoutedData
from api.schemas import EventOut, EventPage
from core.masking import EVENTS
from store.base import EventQuery

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.get("", response_model=EventPage, summary="List stored events, newest first")
def list_events(
    store: StoreDep,
    personal: RoutedData,
    device: Annotated[str | None, Query(description="Only this device.")] = None,
    kind: Annotated[str | None, Query(description="Only this kind, e.g. bin.")] = None,
    from_: FromParam = None,
    to: ToParam = None,
    limit: LimitParam = 100,
    cursor: CursorParam = None,
) -> EventPage:
    from_ms, to_ms = time_range_ms(from_, to)
    query = EventQuery(device_id=device, kind=kind, from_ms=from_ms, to_ms=to_ms, limit=limit, cursor=cursor)
    page = store.query_events(query)
    shown = personal.show(page.items, EVENTS)
    return EventPage(items=[EventOut.model_validate(msgspec.to_builtins(e)) for e in shown],
                     next_cursor=page.next_cursor)
