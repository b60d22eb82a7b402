"""Read-only data the browser console needs that no other endpoint gives (docs/console.md).

- `GET /v1/console/session`: who the key is, what it may do, and the map's configuration (any valid key).
- `GET /v1/console/devices`: registered devices with their position and tags (readings:read).
- `GET /v1/console/intersections[/{id}]`: the intersections, and per intersection the signal phase
  changes of the last minutes, the newest detector reading per approach and when each device at the
  intersection last reported (readings:read).

None of it carries personal data: no plates and no evidence links (camera events are reduced to the time
they were seen), so nothing here is masked or audited.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from api.access.deps import require
from api.access.keys import ApiKey, Scope
from api.deps import ServicesDep, StoreDep
from api.problems import NOT_FOUND, ProblemError, problem_response_doc
from api.services import ApiServices
from core.models import Event
from store.base import EventQuery, LatestReadingsQuery, Store

router = APIRouter(prefix="/v1/console", tags=["console"])

# Signal changes read for one timeline (a busy controller changes a phase every few seconds).
MAX_SIGNAL_CHANGES = 5000
# Latest readings scanned per device kind when collecting an intersection's devices.
MAX_DEVICES_PER_KIND = 10_000
# Kinds that report from an intersection: their events carry its id in `intersection`.
INTERSECTION_KINDS = ("signal", "detector")
CAMERA_KINDS = ("track", "camera_violation")


class TilesOut(BaseModel):
    url: str | None = Field(description="XYZ tile URL template; null: no base map (layers only).")
    attribution: str
    max_zoom: int


class SessionOut(BaseModel):
    key_id: str
    name: str
    scopes: list[str] = Field(description="Every scope the key holds (`admin` expanded to all of them).")
    auth: str = Field(description="`required`, or `disabled` (the keyless local demo).")
    time_zone: str = Field(description="The city's IANA time zone: the console shows local times in it.")
    tiles: TilesOut
    layers: dict[str, dict[str, Any]] = Field(
        description="GeoJSON FeatureCollections drawn on the map: grids, districts, roads.")


class DeviceOut(BaseModel):
    device_id: str
    kind: str
    lat: float | None
    lon: float | None
    tags: dict[str, str]
    active: bool
    expected_interval_s: float | None


class DeviceList(BaseModel):
    items: list[DeviceOut]


class IntersectionList(BaseModel):
    items: list[str] = Field(description="Intersection ids, configured or reported by signals and detectors.")


class SignalChangeOut(BaseModel):
    time_ms: int
    device_id: str
    phase: str
    state: str


class ApproachOut(BaseModel):
    name: str
    phase: str | None = Field(description="The signal phase governing it (configured), if known.")
    detector_id: str | None
    reading_time_ms: int | None
    occupancy_pct: float | None
    speed_kmh: float | None
    flow_veh_h: float | None


class DeviceHealthOut(BaseModel):
    device_id: str
    kind: str
    last_seen_ms: int | None = Field(description="Event time of its newest stored event; null: never seen.")
    expected_interval_s: float | None


class IntersectionOut(BaseModel):
    intersection_id: str
    from_ms: int
    to_ms: int
    signal_changes: list[SignalChangeOut] = Field(description="Oldest first, within from_ms..to_ms.")
    approaches: list[ApproachOut]
    devices: list[DeviceHealthOut]


@router.get("/session", response_model=SessionOut, summary="The key's scopes and the console's map settings")
def session(services: ServicesDep, key: Annotated[ApiKey, Depends(require())]) -> SessionOut:
    console = services.console
    scopes = sorted(s.value for s in Scope if key.allows(s))
    return SessionOut(
        key_id=key.key_id, name=key.name, scopes=scopes, auth=services.settings.auth.value,
        time_zone=console.time_zone,
        tiles=TilesOut(url=console.tile_url, attribution=console.tile_attribution,
                       max_zoom=console.tile_max_zoom),
        layers=console.layers)


_readings = [Depends(require(Scope.READINGS_READ))]


@router.get("/devices", response_model=DeviceList, dependencies=_readings,
            summary="Registered devices with position and tags, for the map")
def devices(services: ServicesDep) -> DeviceList:
    registry = services.devices.list() if services.devices is not None else []
    return DeviceList(items=[DeviceOut(
        device_id=d.device_id, kind=d.kind, lat=d.lat, lon=d.lon,
        tags=_tags_of(services, d.device_id, d.tags), active=d.active,
        expected_interval_s=d.expected_interval_s) for d in registry])


@router.get("/intersections", response_model=IntersectionList, dependencies=_readings,
            summary="Intersection ids: configured, tagged on devices or reported by signals and detectors")
def intersections(services: ServicesDep, store: StoreDep) -> IntersectionList:
    ids = set(services.console.intersections) | set(services.console.camera_intersections.values())
    if services.devices is not None:
        ids |= {d.tags["intersection"] for d in services.devices.list() if "intersection" in d.tags}
    for kind in INTERSECTION_KINDS:
        ids |= {str(e.attributes["intersection"]) for e in _latest(store, kind)
                if e.attributes.get("intersection")}
    return IntersectionList(items=sorted(ids))


@router.get("/intersections/{intersection_id}", response_model=IntersectionOut, dependencies=_readings,
            summary="Signal phase timeline, approaches and device health of one intersection",
            responses={404: problem_response_doc("No intersection with that id is configured or reporting")})
def intersection(
    services: ServicesDep,
    store: StoreDep,
    intersection_id: Annotated[str, Path(min_length=1, max_length=128)],
    minutes: Annotated[int, Query(ge=1, le=120, description="Length of the signal timeline.")] = 10,
) -> IntersectionOut:
    to_ms = time.time_ns() // 1_000_000
    from_ms = to_ms - minutes * 60_000
    latest = {kind: [e for e in _latest(store, kind) if e.attributes.get("intersection") == intersection_id]
              for kind in INTERSECTION_KINDS}
    configured = services.console.intersections.get(intersection_id)
    cameras = [d for d, i in services.console.camera_intersections.items() if i == intersection_id]
    registry = {d.device_id: d for d in services.devices.list()} if services.devices is not None else {}
    tagged = [d for d, s in registry.items() if s.tags.get("intersection") == intersection_id]
    if configured is None and not cameras and not tagged and not any(latest.values()):
        raise ProblemError(NOT_FOUND, f"no intersection {intersection_id!r} is configured or reporting")
    changes = _signal_changes(store, intersection_id, from_ms, to_ms)
    approaches = _approaches(configured or [], latest["detector"])
    seen = {e.device_id: e.event_time_ms for kind in INTERSECTION_KINDS for e in latest[kind]}
    for kind in CAMERA_KINDS:  # only when each camera was last seen: its events may carry plates
        seen.update({e.device_id: e.event_time_ms for e in _latest(store, kind)
                     if e.device_id in cameras or e.device_id in tagged})
    kinds = {e.device_id: e.kind for kind in INTERSECTION_KINDS for e in latest[kind]}
    device_ids = sorted(set(seen) | set(cameras) | set(tagged))
    health = [DeviceHealthOut(
        device_id=d, kind=registry[d].kind if d in registry else kinds.get(d, "camera"),
        last_seen_ms=seen.get(d),
        expected_interval_s=registry[d].expected_interval_s if d in registry else None) for d in device_ids]
    return IntersectionOut(intersection_id=intersection_id, from_ms=from_ms, to_ms=to_ms,
                           signal_changes=changes, approaches=approaches, devices=health)


def _tags_of(services: ApiServices, device_id: str, tags: dict[str, str]) -> dict[str, str]:
    """The device's tags with the intersection its camera zones name (traffic.cameras), as events get it."""
    watched = services.console.camera_intersections.get(device_id)
    return {**tags, "intersection": watched} if watched and "intersection" not in tags else dict(tags)


def _latest(store: Store, kind: str) -> list[Event]:
    return store.latest_readings(LatestReadingsQuery(kind=kind, limit=MAX_DEVICES_PER_KIND)).items


def _signal_changes(store: Store, intersection_id: str, from_ms: int, to_ms: int) -> list[SignalChangeOut]:
    page = store.query_events(EventQuery(kind="signal", from_ms=from_ms, to_ms=to_ms,
                                         limit=MAX_SIGNAL_CHANGES))
    changes = [SignalChangeOut(time_ms=e.event_time_ms, device_id=e.device_id,
                               phase=str(e.attributes.get("phase")), state=str(e.attributes.get("state")))
               for e in page.items if e.attributes.get("intersection") == intersection_id]
    return sorted(changes, key=lambda c: c.time_ms)


def _approaches(configured: list[Any], detectors: list[Event]) -> list[ApproachOut]:
    by_name: dict[str, Event] = {}
    for event in detectors:
        name = str(event.attributes.get("approach") or event.device_id)
        if name not in by_name or by_name[name].event_time_ms < event.event_time_ms:
            by_name[name] = event
    phases = {a.name: a.phase for a in configured}
    names = list(phases) + sorted(n for n in by_name if n not in phases)
    out = []
    for name in names:
        reading = by_name.get(name)
        attributes = reading.attributes if reading is not None else {}
        out.append(ApproachOut(
            name=name, phase=phases.get(name), detector_id=reading.device_id if reading else None,
            reading_time_ms=reading.event_time_ms if reading else None,
            occupancy_pct=_number(attributes.get("occupancy_pct")),
            speed_kmh=_number(attributes.get("speed_kmh")),
            flow_veh_h=_number(attributes.get("flow_veh_h"))))
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
