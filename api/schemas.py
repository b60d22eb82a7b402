"""Response models: the API contract as published in OpenAPI (mirrors core.models)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from core.models import LifecycleChange, Severity, ViolationStatus


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
    detected_time_ms: int | None = Field(
        None, description="Event time at which the rule opened it (decided it was a violation); kept when it "
                          "clears. Null only for violations stored before citywatch kept it.")


class HandlingOut(BaseModel):
    """What people did about a violation so far (POST /v1/violations/{id}/actions); all null while
    nobody acted. Times are wall-clock epoch milliseconds UTC."""

    acknowledged_time_ms: int | None = None
    acknowledged_by: str | None = Field(None, description="`key:<key id>` of who acknowledged it.")
    assignee: str | None = Field(None, description="The department or person it is assigned to now.")
    assigned_time_ms: int | None = None
    dismissed_time_ms: int | None = Field(None, description="Set once it was dismissed as false.")
    dismissed_by: str | None = None
    dismissed_reason: str | None = None
    notes: int = Field(0, description="How many notes were added.")


class ViolationView(ViolationOut):
    """A violation as the list and the single-violation route show it: with what people did about it."""

    handling: HandlingOut


class ViolationPage(BaseModel):
    items: list[ViolationView]
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


class LifecycleEntryOut(BaseModel):
    """One entry of a violation's history."""

    change: LifecycleChange = Field(description="opened, updated, cleared (by the rule); acknowledged, "
                                                "assigned, dismissed, noted (by a person).")
    time_ms: int = Field(description="For the rule's changes the event time of the change; for a "
                                     "person's action the wall time it was taken (epoch ms UTC).")
    actor: str = Field(description="`rule:<violation type>`, or `key:<key id>` of the API key used.",
                       examples=["rule:bin_overflow", "key:3fa2b1c0"])
    actor_name: str | None = Field(None, description="The API key's name, for a person's action.")
    note: str | None = Field(None, description="The note, or the reason of a dismissal.")
    assignee: str | None = Field(None, description="For `assigned`: the department or person.")


class ViolationHistoryOut(BaseModel):
    violation_id: str
    entries: list[LifecycleEntryOut] = Field(description="Every change, oldest first.")
