"""Annotated dependencies: routes declare what they need, tests override it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.services import ApiServices
from api.violation_actions import ViolationActions
from store.base import Store


def get_services(request: Request) -> ApiServices:
    services: ApiServices = request.state.services
    return services


def get_store(services: Annotated[ApiServices, Depends(get_services)]) -> Store:
    return services.store


def get_violation_actions(services: Annotated[ApiServices, Depends(get_services)]) -> ViolationActions:
    return services.violation_actions


ServicesDep = Annotated[ApiServices, Depends(get_services)]
ViolationActionsDep = Annotated[ViolationActions, Depends(get_violation_actions)]
StoreDep = Annotated[Store, Depends(get_store)]
