"""Response models: the API contract as published in OpenAPI (mirrors core.models)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from core.models import Severity, ViolationStatus


class LocationOut(BaseModel):
    lat: float
    lon: float


class EvidenceOut(BaseModel):
    event_ids: list[str] = Field(description="Ids of the events the judgement was made on.")
    details: dict[str, Any] = Field(description="Rule-specific facts: readings, thresholds, zone, phase.")
    snapshot_url: str | None = None
    plate: str | None = None


class ViolationOut(BaseModel):
    violation_id: str = Field(description="Deterministic id: the same incident always has the same id.")
    type: str = Field(examples=["bin_overflow"])
    severity: Severity
    device_id: str
    start_time_ms: int = Field(description="Event time the incident started, epoch milliseconds UTC.")
    status: ViolationStatus
    end_time_ms: int | None = Field(None, description="Event time it cleared; null while open.")
    location: LocationOut | None = None
    evidence: EvidenceOut
    tags: dict[str, str] = Field(description="grid, district, department ... of the device.")
    updated_time_ms: int = Field(description="Event time of the latest status change.")


class ViolationPage(BaseModel):
    items: list[ViolationOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next, older page; null at the end.")


class DeadLetterOut(BaseModel):
    reason: str = Field(examples=["malformed_json"])
    detail: str = Field(description="What was wrong, naming the field.")
    topic: str
    payload: str = Field(description="The rejected payload (UTF-8, invalid bytes replaced; truncated).")
    received_time_ms: int
    source: str
    dead_letter_id: str = Field(description="Deterministic from the content: the same rejection replayed "
                                            "is stored once under this id.")


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    next_cursor: str | None


class DeadLetterSummary(BaseModel):
    by_reason: dict[str, int] = Field(description="Dead letters stored, per reason.")


class ComponentOut(BaseModel):
    name: str
    ready: bool
    detail: str


class ReadinessOut(BaseModel):
    ready: bool
    components: list[ComponentOut]


class EventOut(BaseModel):
    event_id: str = Field(description="Stable id: the same observation delivered twice has the same id.")
    device_id: str
    kind: str = Field(examples=["bin"])
    event_time_ms: int = Field(description="When the device observed it, epoch milliseconds UTC.")
    ingest_time_ms: int = Field(description="When citywatch received it, epoch milliseconds UTC.")
    attributes: dict[str, Any] = Field(examples=[{"fill_pct": 91.5, "temperature_c": 21.0}])
    location: LocationOut | None = None
    source: str = Field(description="The codec that decoded it.")
    tags: dict[str, str]


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None
