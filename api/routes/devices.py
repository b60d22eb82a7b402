"""Devices: the registry as operators manage it (list, get, create, update, deactivate).

Changes are persisted and seen by ingest with the next message; see ingest/device_admin.py (and, for the
Kafka set-up where ingest and the processors are other processes, ingest/device_sync.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.deps import ServicesDep
from api.problems import CONFLICT, NOT_FOUND, UNAVAILABLE, ProblemError, problem_response_doc
from core.settings import DeviceSettings
from ingest.device_admin import DeviceChangeNotSent, DeviceExists, DeviceManager, DeviceNotFound

# 503: this instance has no registry, or a change could not be handed to ingest (Kafka set-up).
router = APIRouter(prefix="/v1/devices", tags=["devices"], responses={503: problem_response_doc(
    "No device registry on this instance, or the change could not be sent to ingest")})
NO_DEVICE: dict[int | str, dict[str, Any]] = {404: problem_response_doc("No device with that id")}


def get_devices(services: ServicesDep) -> DeviceManager:
    if services.devices is None:
        raise ProblemError(UNAVAILABLE, "this instance does not manage a device registry")
    return services.devices


def _not_found(device_id: str) -> ProblemError:
    return ProblemError(NOT_FOUND, f"no device {device_id!r}")


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
    responses=NO_DEVICE,
)
def get_device(device_id: str, devices: DevicesDep) -> DeviceSettings:
    device = devices.get(device_id)
    if device is None:
        raise _not_found(device_id)
    return device


@router.post(
    "",
    response_model=DeviceSettings,
    status_code=201,
    summary="Register a device",
    responses={409: problem_response_doc("A device with that id exists")},
)
def create_device(device: DeviceSettings, devices: DevicesDep) -> DeviceSettings:
    try:
        return devices.create(device)
    except DeviceExists as exc:
        raise ProblemError(CONFLICT, str(exc)) from None
    except DeviceChangeNotSent as exc:
        raise ProblemError(UNAVAILABLE, str(exc)) from None


@router.patch(
    "/{device_id}",
    response_model=DeviceSettings,
    summary="Change some fields of a device",
    responses=NO_DEVICE,
)
def update_device(device_id: str, changes: DeviceChanges, devices: DevicesDep) -> DeviceSettings:
    # Only the fields the client sent: an explicit null clears an optional field (e.g. model).
    sent: dict[str, Any] = changes.model_dump(exclude_unset=True)
    try:
        return devices.update(device_id, sent)
    except DeviceNotFound:
        raise _not_found(device_id) from None
    except ValidationError as exc:
        # The merged device failed the registry's rules: name the fields as parts of the request body.
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None
    except DeviceChangeNotSent as exc:
        raise ProblemError(UNAVAILABLE, str(exc)) from None


@router.delete(
    "/{device_id}",
    response_model=DeviceSettings,
    summary="Deactivate a device: kept, but its messages are dead-lettered as inactive_device",
    responses=NO_DEVICE,
)
def deactivate_device(device_id: str, devices: DevicesDep) -> DeviceSettings:
    try:
        return devices.deactivate(device_id)
    except DeviceNotFound:
        raise _not_found(device_id) from None
    except DeviceChangeNotSent as exc:
        raise ProblemError(UNAVAILABLE, str(exc)) from None
