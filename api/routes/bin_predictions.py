"""Bin fill forecasts: which bins to empty first, soonest predicted full time first."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import StoreDep
from api.schemas import LocationOut
from processors.rules.bin_near_full import PREDICTION_TYPE

router = APIRouter(prefix="/v1/bins", tags=["bins"])


class BinPredictionOut(BaseModel):
    device_id: str
    fill_pct: float = Field(description="The newest fill level the forecast starts from.")
    computed_time_ms: int = Field(description="Event time of that reading, epoch milliseconds UTC.")
    predicted_full_time_ms: int | None = Field(
        description="When the bin is predicted to reach 100% (event time); null: no rising trend yet "
        "(just emptied, or too few readings since).")
    details: dict[str, Any] = Field(description="slope_pct_per_h, points fitted, dropped outlier, horizon_s.")
    location: LocationOut | None = None
    tags: dict[str, str] = Field(description="grid, district, department ... of the bin.")


class BinPredictionList(BaseModel):
    items: list[BinPredictionOut] = Field(description="Soonest predicted full first; unpredicted last.")


@router.get("/predictions", response_model=BinPredictionList,
            summary="Newest fill forecast per bin, the ones to empty first at the top")
def list_bin_predictions(
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Most bins returned.")] = 1000,
) -> BinPredictionList:
    items = []
    for prediction in store.query_predictions(PREDICTION_TYPE, limit):
        data = msgspec.to_builtins(prediction)
        items.append(BinPredictionOut(
            device_id=prediction.device_id, fill_pct=prediction.value,
            computed_time_ms=prediction.computed_time_ms,
            predicted_full_time_ms=prediction.predicted_time_ms, details=prediction.details,
            location=data.get("location"), tags=prediction.tags))
    return BinPredictionList(items=items)
