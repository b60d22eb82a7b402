"""Dead letters: rejected input with the reason, so integrators can see what to fix."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import StoreDep
from api.params import CursorParam, LimitParam
from api.personal_data import RoutedData
from api.schemas import DeadLetterOut, DeadLetterPage, DeadLetterSummary
from core.masking import DEAD_LETTERS
from store.base import DeadLetterQuery

router = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"])


@router.get("", response_model=DeadLetterPage, summary="List rejected input, newest first")
def list_dead_letters(
    store: StoreDep,
    personal: RoutedData,
    reason: Annotated[str | None, Query(description="Only this reason, e.g. malformed_json.")] = None,
    limit: LimitParam = 100,
    cursor: CursorParam = None,
) -> DeadLetterPage:
    page = store.query_dead_letters(DeadLetterQuery(reason=reason, limit=limit, cursor=cursor))
    items = [
        DeadLetterOut(reason=d.reason, detail=d.detail, topic=d.topic,
                      payload=d.payload.decode("utf-8", errors="replace"),
                      received_time_ms=d.received_time_ms, source=d.source,
                      dead_letter_id=d.dead_letter_id)
        for d in personal.show(page.items, DEAD_LETTERS)
    ]
    return DeadLetterPage(items=items, next_cursor=page.next_cursor)


@router.get("/summary", response_model=DeadLetterSummary, summary="Dead letters counted per reason")
def dead_letter_summary(store: StoreDep) -> DeadLetterSummary:
    return DeadLetterSummary(by_reason=store.count_dead_letters_by_reason())
