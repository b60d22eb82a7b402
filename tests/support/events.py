"""Builders for canonical events, so scenario tests read as timelines."""

from __future__ import annotations

from typing import Any

from core.models import Event, stable_id

T0_MS = 1_764_133_200_000  # 2025-11-26T05:00:00Z


def reading(device_id: str, at_s: float, kind: str = "bin", **attributes: Any) -> Event:
    event_time_ms = T0_MS + int(at_s * 1000)
    return Event(
        event_id=stable_id(device_id, kind, event_time_ms, sorted(attributes.items())),
        device_id=device_id,
        kind=kind,
        event_time_ms=event_time_ms,
        ingest_time_ms=event_time_ms,
        attributes=attributes,
    )
