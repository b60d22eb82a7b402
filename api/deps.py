"""Annotated dependencies: routes declare what they need, tests override it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.services import ApiServices
from store.base import Store


def get_services(request: Request) -> ApiServices:
    services: ApiServices = request.state.services
    return services


def get_store(services: Annotated[ApiServices, Depends(get_services)]) -> Store:
    return services.store


ServicesDep = Annotated[ApiServices, Depends(get_services)]
StoreDep = Annotated[Store, Depends(get_store)]
