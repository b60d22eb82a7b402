"""Devices: the registry as operators manage it (list, get, create, update, deactivate).

Changes are persisted and seen by ingest with the next message; see ingest/device_admin.py (and, for the
Kafka set-up where ingest and the processors are other processes, ingest/device_sync.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.deps import ServicesDep
from citywatch.settings import DeviceSettings
from ingest.device_admin import DeviceChangeNotSent, DeviceExists, DeviceManager, DeviceNotFound

router = APIRouter(prefix="/v1/devices", tags=["devices"])


def get_devices(services: ServicesDep) -> DeviceManager:
    if services.devices is None:
        raise HTTPException(503, "this instance does not manage a device registry")
    return services.devices


DevicesDep = Annotated[DeviceManager, Depends(get_devices)]


class DevicePage(BaseModel):
    items: list[DeviceSettings]


class DeviceChanges(BaseModel):
    """Fields to change; those left out keep their value. The id cannot change."""

    model_config = ConfigDict(extra="forbid")

    kind: str | None = Field(None, min_length=1)
    model: str | None = None
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    tags: dict[str, str] | None = None
    active: bool | None = None
    expected_interval_s: float | None = Field(None, gt=0)
    install: dict[str, float] | None = None
    thresholds: dict[str, dict[str, float]] | None = None


@router.get("", response_model=DevicePage, summary="List registered devices")
def list_devices(
    devices: DevicesDep,
    kind: Annotated[str | None, Query(description="Only this kind, e.g. bin.")] = None,
    active: Annotated[bool | None, Query(description="Only active (true) or deactivated (false).")] = None,
) -> DevicePage:
    return DevicePage(items=devices.list(kind=kind, active=active))


@router.get(
    "/{device_id}",
    response_model=DeviceSettings,
    summary="One device",
    responses={404: {"description": "No device with that id"}},
)
def get_device(device_id: str, devices: DevicesDep) -> DeviceSettings:
    device = devices.get(device_id)
    if device is None:
        raise HTTPException(404, f"no device {device_id!r}")
    return device


@router.post(
    "",
    response_model=DeviceSettings,
    status_code=201,
    summary="Register a device",
    responses={409: {"description": "A device with that id exists"}},
)
def create_device(device: DeviceSettings, devices: DevicesDep) -> DeviceSettings:
    try:
        return devices.create(device)
    except DeviceExists as exc:
        raise HTTPException(409, str(exc)) from None
    except DeviceChangeNotSent as exc:
        raise HTTPException(503, str(exc)) from None


@router.patch(
    "/{device_id}",
    response_model=DeviceSettings,
    summary="Change some fields of a device",
    responses={404: {"description": "No device with that id"}},
)
def update_device(device_id: str, changes: DeviceChanges, devices: DevicesDep) -> DeviceSettings:
    # Only the fields the client sent: an explicit null clears an optional field (e.g. model).
    sent: dict[str, Any] = changes.model_dump(exclude_unset=True)
    try:
        return devices.update(device_id, sent)
    except DeviceNotFound:
        raise HTTPException(404, f"no device {device_id!r}") from None
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    except DeviceChangeNotSent as exc:
        raise HTTPException(503, str(exc)) from None


@router.delete(
    "/{device_id}",
    response_model=DeviceSettings,
    summary="Deactivate a device: kept, but its messages are dead-lettered as inactive_device",
    responses={404: {"description": "No device with that id"}},
)
def deactivate_device(device_id: str, devices: DevicesDep) -> DeviceSettings:
    try:
        return devices.deactivate(device_id)
    except DeviceNotFound:
        raise HTTPException(404, f"no device {device_id!r}") from None
    except DeviceChangeNotSent as exc:
        raise HTTPException(503, str(exc)) from None
