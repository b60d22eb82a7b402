"""Violation exports for GIS tools and spreadsheets: the same filters as the list, every page at once."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterator
from typing import Annotated, Final
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import ServicesDep, StoreDep
from api.personal_data import ViolationData
from api.routes.violations import ViolationSelection
from core.local_time import iso_local
from core.masking import VIOLATIONS
from core.models import Violation
from store.base import Store, ViolationQuery

router = APIRouter(prefix="/v1/exports", tags=["exports"])

# Exports read the store in pages of this size, newest first, up to `limit` violations.
EXPORT_PAGE: Final = 1000
MAX_EXPORT: Final = 100_000
# Each epoch-ms time is followed by the same instant in the city's time zone (`traffic.time_zone`), ISO
# 8601 with the offset in force then: what a spreadsheet user reads, without converting.
CSV_COLUMNS: Final = (
    "violation_id",
    "type",
    "severity",
    "status",
    "device_id",
    "start_time_ms",
    "start_time_local",
    "end_time_ms",
    "end_time_local",
    "updated_time_ms",
    "updated_time_local",
    "detected_time_ms",
    "detected_time_local",
    "lat",
    "lon",
    "grid",
    "district",
    "department",
    "intersection",
    "event_ids",
    "plate",
    "snapshot_url",
)

ExportLimit = Annotated[int, Query(ge=1, le=MAX_EXPORT, description=f"At most this many (max {MAX_EXPORT}).")]


def _violations(store: Store, query: ViolationQuery, limit: int) -> Iterator[Violation]:
    # Keyset pages: stable under concurrent writes (a violation started after the export began is not in it,
    # none is repeated or skipped).
    sent = 0
    cursor = None
    while sent < limit:
        page = store.query_violations(
            dataclasses.replace(query, cursor=cursor, limit=min(EXPORT_PAGE, limit - sent))
        )
        yield from page.items
        sent += len(page.items)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _csv_rows(violations: Iterator[Violation], zone: ZoneInfo) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for v in violations:
        writer.writerow(
            [
                v.violation_id,
                v.type,
                v.severity.value,
                v.status.value,
                v.device_id,
                v.start_time_ms,
                iso_local(v.start_time_ms, zone),
                v.end_time_ms if v.end_time_ms is not None else "",
                iso_local(v.end_time_ms, zone),
                v.updated_time_ms,
                iso_local(v.updated_time_ms, zone),
                v.detected_time_ms if v.detected_time_ms is not None else "",
                iso_local(v.detected_time_ms, zone),
                v.location.lat if v.location else "",
                v.location.lon if v.location else "",
                v.tags.get("grid", ""),
                v.tags.get("district", ""),
                v.tags.get("department", ""),
                v.tags.get("intersection", ""),
                " ".join(v.evidence.event_ids),
                v.evidence.plate or "",
                v.evidence.snapshot_url or "",
            ]
        )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def feature(v: Violation) -> dict[str, object]:
    geometry = (
        None if v.location is None else {"type": "Point", "coordinates": [v.location.lon, v.location.lat]}
    )
    return {
        "type": "Feature",
        "id": v.violation_id,
        "geometry": geometry,
        "properties": {
            "type": v.type,
            "severity": v.severity.value,
            "status": v.status.value,
            "device_id": v.device_id,
            "start_time_ms": v.start_time_ms,
            "end_time_ms": v.end_time_ms,
            "updated_time_ms": v.updated_time_ms,
            "detected_time_ms": v.detected_time_ms,
            "tags": v.tags,
            "event_ids": v.evidence.event_ids,
            "plate": v.evidence.plate,
            "snapshot_url": v.evidence.snapshot_url,
        },
    }


def _geojson(violations: Iterator[Violation]) -> Iterator[str]:
    yield '{"type": "FeatureCollection", "features": ['
    for n, v in enumerate(violations):
        # UTF-8 as RFC 7946 says, so plates and place names read as written in GIS tools.
        yield ("," if n else "") + json.dumps(feature(v), ensure_ascii=False)
    yield "]}"


def _first_page_checked(store: Store, query: ViolationQuery, limit: int) -> Iterator[Violation]:
    """Run the first page before the response starts, so a bad cursor or query still answers 4xx."""
    violations = _violations(store, query, limit)
    try:
        first = next(violations)
    except StopIteration:
        return iter(())

    def chained() -> Iterator[Violation]:
        yield first
        yield from violations

    return chained()


@router.get(
    "/violations.csv",
    summary="Violations as CSV",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"example": ",".join(CSV_COLUMNS) + "\n"}}}},
)
def export_csv(
    store: StoreDep,
    services: ServicesDep,
    personal: ViolationData,
    selection: ViolationSelection,
    limit: ExportLimit = 10_000,
) -> StreamingResponse:
    """Times in epoch ms, each followed by the same instant in the city's time zone (`*_local`)."""
    query = dataclasses.replace(selection, limit=EXPORT_PAGE)
    violations = personal.show_stream(_first_page_checked(store, query, limit), VIOLATIONS)
    rows = _csv_rows(violations, ZoneInfo(services.time_zone))
    return StreamingResponse(
        rows, media_type="text/csv", headers={"Content-Disposition": 'attachment; filename="violations.csv"'}
    )


@router.get(
    "/violations.geojson",
    summary="Violations as a GeoJSON FeatureCollection",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/geo+json": {
                    "example": {
                        "type": "FeatureCollection",
                        "features": [
                            {
                                "type": "Feature",
                                "id": "3520726f1cd4f1cc20b6ec3bc706a118",
                                "geometry": {"type": "Point", "coordinates": [114.07204, 22.54185]},
                                "properties": {
                                    "type": "bin_overflow",
                                    "severity": "medium",
                                    "status": "open",
                                    "device_id": "bin-0017",
                                    "start_time_ms": 1795671681513,
                                },
                            }
                        ],
                    }
                }
            }
        }
    },
)
def export_geojson(
    store: StoreDep,
    personal: ViolationData,
    selection: ViolationSelection,
    limit: ExportLimit = 10_000,
) -> StreamingResponse:
    query = dataclasses.replace(selection, limit=EXPORT_PAGE)
    violations = personal.show_stream(_first_page_checked(store, query, limit), VIOLATIONS)
    return StreamingResponse(_geojson(violations), media_type="application/geo+json")
