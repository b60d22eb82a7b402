"""Native messages of signal controllers, traffic detectors and violation-judging smart cameras.

The formats are published as JSON Schema files in configs/schemas/ (`signal.schema.json`,
`detector.schema.json`, `camera_violation.schema.json`), with examples in configs/schemas/examples/.
The structs below are the same formats for msgspec, which decodes and validates in one pass; a test
runs every example through both the schema and the codec so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from core.models import Event, Location, stable_id
from ingest.codecs import common as c
from ingest.codecs.base import CodecError
from ingest.codecs.explain import explain, malformed

DeviceId = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+\Z")]
Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+\Z")]
EventId = Annotated[str, Meta(min_length=1, max_length=128)]
Time = int | str
NonNegative = Annotated[float, Meta(ge=0)]
SignalState = Literal["red", "amber", "green", "flashing_amber", "flashing_green", "off"]
MAX_CHANGES = 256


class Position(msgspec.Struct, forbid_unknown_fields=True):
    lat: Annotated[float, Meta(ge=-90.0, le=90.0)]
    lon: Annotated[float, Meta(ge=-180.0, le=180.0)]


class PhaseChange(msgspec.Struct, forbid_unknown_fields=True):
    phase: Name
    state: SignalState
    time: Time | None = None
    remaining_s: NonNegative | None = None


class SignalMessage(msgspec.Struct, forbid_unknown_fields=True):
    device_id: DeviceId
    intersection: Name
    time: Time
    changes: Annotated[list[PhaseChange], Meta(min_length=1, max_length=MAX_CHANGES)]
    plan: Name | None = None
    cycle_s: Annotated[float, Meta(gt=0)] | None = None


class DetectorMessage(msgspec.Struct, forbid_unknown_fields=True):
    device_id: DeviceId
    intersection: Name
    approach: Name
    time: Time
    interval_s: Annotated[float, Meta(gt=0, le=86400)]
    event_id: EventId | None = None
    lane: Annotated[int, Meta(ge=0, le=32)] | None = None
    flow_veh_h: Annotated[float, Meta(ge=0, le=20000)] | None = None
    # At most 20,000 vehicles an hour over the longest interval (a day): a bound that also keeps flow finite.
    volume_veh: Annotated[int, Meta(ge=0, le=480_000)] | None = None
    occupancy_pct: Annotated[float, Meta(ge=0, le=100)] | None = None
    speed_kmh: Annotated[float, Meta(ge=0, le=400)] | None = None


class CameraViolationMessage(msgspec.Struct, forbid_unknown_fields=True):
    device_id: DeviceId
    time: Time
    violation_code: Annotated[str, Meta(min_length=1, max_length=32)]
    violation_type: Name
    evidence_url: Annotated[str, Meta(min_length=1, max_length=2048, pattern=r"^https?://")]
    event_id: EventId | None = None
    plate: Annotated[str, Meta(min_length=1, max_length=16)] | None = None
    plate_color: Annotated[str, Meta(max_length=16)] | None = None
    lane: Annotated[int, Meta(ge=0, le=32)] | None = None
    speed_kmh: Annotated[float, Meta(ge=0, le=400)] | None = None
    evidence_urls: (
        Annotated[list[Annotated[str, Meta(pattern=r"^https?://")]], Meta(max_length=16)] | None
    ) = None
    location: Position | None = None


class _TypedNativeCodec:
    """Decodes one struct type and turns it into events; errors name the JSON path of the field."""

    name: str

    def __init__(self, struct: type[msgspec.Struct], to_events: Callable[[Any, int], list[Event]]) -> None:
        self._struct = struct
        self._decoder = msgspec.json.Decoder(struct)
        self._to_events = to_events

    def decode(self, topic: str, payload: bytes, received_time_ms: int) -> list[Event]:
        try:
            message = self._decoder.decode(payload)
        except msgspec.ValidationError:
            raise explain(self._struct, payload) from None
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise malformed(payload, exc) from None
        return self._to_events(message, received_time_ms)


def _time_ms(value: int | str, path: str, received_time_ms: int) -> int:
    time_ms = value if isinstance(value, int) else c.rfc3339_ms(value, path)
    return c.plausible(time_ms, path, received_time_ms)


class SignalCodec(_TypedNativeCodec):
    """`signal`: one event per phase change, at the change's time (docs/model.md)."""

    name = "signal"

    def __init__(self) -> None:
        super().__init__(SignalMessage, self._events)

    def _events(self, message: SignalMessage, received_time_ms: int) -> list[Event]:
        message_ms = _time_ms(message.time, "time", received_time_ms)
        events = []
        for index, change in enumerate(message.changes):
            time_ms = (
                message_ms
                if change.time is None
                else _time_ms(change.time, f"changes[{index}].time", received_time_ms)
            )
            attributes: dict[str, Any] = {
                "intersection": message.intersection,
                "phase": change.phase,
                "state": change.state,
            }
            for key, value in (
                ("remaining_s", change.remaining_s),
                ("plan", message.plan),
                ("cycle_s", message.cycle_s),
            ):
                if value is not None:
                    attributes[key] = value
            events.append(
                Event(
                    event_id=stable_id("signal", message.device_id, change.phase, change.state, time_ms),
                    device_id=message.device_id,
                    kind="signal",
                    event_time_ms=time_ms,
                    ingest_time_ms=received_time_ms,
                    attributes=attributes,
                    source=self.name,
                )
            )
        return events


class DetectorCodec(_TypedNativeCodec):
    """`detector`: one event per message with flow, occupancy and speed over `interval_s`."""

    name = "detector"

    def __init__(self) -> None:
        super().__init__(DetectorMessage, self._events)

    def _events(self, message: DetectorMessage, received_time_ms: int) -> list[Event]:
        time_ms = _time_ms(message.time, "time", received_time_ms)
        measured = {
            key: getattr(message, key)
            for key in ("flow_veh_h", "volume_veh", "occupancy_pct", "speed_kmh")
            if getattr(message, key) is not None
        }
        if not measured:
            raise CodecError(
                c.MISSING_FIELD,
                "flow_veh_h: a detector message needs at least one of flow_veh_h, "
                "volume_veh, occupancy_pct, speed_kmh",
            )
        attributes: dict[str, Any] = {
            "intersection": message.intersection,
            "approach": message.approach,
            "interval_s": message.interval_s,
            **measured,
        }
        if message.lane is not None:
            attributes["lane"] = message.lane
        if "flow_veh_h" not in attributes and message.volume_veh is not None:
            attributes["flow_veh_h"] = round(message.volume_veh * 3600 / message.interval_s, 3)
        event_id = message.event_id or stable_id(
            "detector", message.device_id, message.approach, message.lane, time_ms
        )
        return [
            Event(
                event_id=event_id,
                device_id=message.device_id,
                kind="detector",
                event_time_ms=time_ms,
                ingest_time_ms=received_time_ms,
                attributes=attributes,
                source=self.name,
            )
        ]


class CameraViolationCodec(_TypedNativeCodec):
    """`camera_violation`: a smart camera's own judgement, stored as an event for rules to turn into a
    violation (the camera is the judge; citywatch keeps the evidence and routes it)."""

    name = "camera_violation"

    def __init__(self) -> None:
        super().__init__(CameraViolationMessage, self._events)

    def _events(self, message: CameraViolationMessage, received_time_ms: int) -> list[Event]:
        time_ms = _time_ms(message.time, "time", received_time_ms)
        attributes: dict[str, Any] = {
            "violation_code": message.violation_code,
            "violation_type": message.violation_type,
            "evidence_url": message.evidence_url,
        }
        for key in ("plate", "plate_color", "lane", "speed_kmh", "evidence_urls"):
            value = getattr(message, key)
            if value is not None:
                attributes[key] = value
        event_id = message.event_id or stable_id(
            "camera_violation", message.device_id, message.violation_code, message.plate, time_ms
        )
        location = (
            None if message.location is None else Location(lat=message.location.lat, lon=message.location.lon)
        )
        return [
            Event(
                event_id=event_id,
                device_id=message.device_id,
                kind="camera_violation",
                event_time_ms=time_ms,
                ingest_time_ms=received_time_ms,
                attributes=attributes,
                location=location,
                source=self.name,
            )
        ]
