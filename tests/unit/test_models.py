"""The canonical models: validation on decode, stable ids, round trips through the bus encoding."""

from __future__ import annotations

import msgspec
import pytest

from core.models import Event, Evidence, Location, Severity, Violation, ViolationStatus, stable_id


def test_stable_id_is_deterministic_and_sensitive_to_every_part() -> None:
    assert stable_id("bin_overflow", "bin-1", "e1") == stable_id("bin_overflow", "bin-1", "e1")
    assert stable_id("bin_overflow", "bin-1", "e1") != stable_id("bin_overflow", "bin-1", "e2")
    # Parts are separated, so moving characters between parts changes the id.
    assert stable_id("ab", "c") != stable_id("a", "bc")
    assert len(stable_id("x")) == 32


@pytest.mark.parametrize("raw", [b'{"lat": 91, "lon": 0}', b'{"lat": 0, "lon": -180.5}'])
def test_locations_outside_the_globe_are_rejected_on_decode(raw: bytes) -> None:
    with pytest.raises(msgspec.ValidationError, match="outside"):
        msgspec.json.decode(raw, type=Location)


def test_event_and_violation_round_trip_through_json() -> None:
    event = Event(event_id="e1", device_id="bin-1", kind="bin", event_time_ms=1, ingest_time_ms=2,
                  attributes={"fill_pct": 91.5}, location=Location(lat=22.5, lon=114.0),
                  tags={"grid": "FT-11"})
    assert msgspec.json.decode(msgspec.json.encode(event), type=Event) == event
    violation = Violation(violation_id="v1", type="bin_overflow", severity=Severity.HIGH, device_id="bin-1",
                          start_time_ms=1, status=ViolationStatus.CLEARED, end_time_ms=5, updated_time_ms=5,
                          evidence=Evidence(event_ids=["e1"], details={"fill_pct": [95]}))
    assert msgspec.json.decode(msgspec.json.encode(violation), type=Violation) == violation


def test_events_are_immutable() -> None:
    event = Event(event_id="e1", device_id="bin-1", kind="bin", event_time_ms=1, ingest_time_ms=2)
    with pytest.raises(AttributeError):
        event.kind = "air"  # type: ignore[misc]
