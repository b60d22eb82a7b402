"""Refusing what a client misspelt, with the name it most likely meant.

A misspelt key in a subscription body (`"filtr"`) or a misspelt violation type in a filter would
otherwise be ignored or match nothing, silently: a subscription to everything, or to nothing. Every
body and filter of the alerts API refuses unknown names instead, and says which valid name is closest.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from fastapi import HTTPException
from fastapi.dependencies.models import Dependant
from pydantic import BaseModel, ConfigDict, model_validator
from starlette.requests import Request


def closest(name: str, valid: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(name, sorted(valid), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_name(what: str, name: str, valid: Iterable[str]) -> str:
    """`unknown field 'filtr'; did you mean 'filter'? (valid: ...)`"""
    options = sorted(valid)
    guess = closest(name, options)
    hint = f"; did you mean {guess!r}?" if guess else ""
    return f"unknown {what} {name!r}{hint} (valid: {', '.join(options)})"


class StrictModel(BaseModel):
    """A request body that refuses unknown keys, naming the closest known one."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [key for key in data if key not in cls.model_fields]
            if unknown:
                raise ValueError("; ".join(unknown_name("field", str(key), cls.model_fields)
                                           for key in unknown))
        return data


def _query_names(dependant: Dependant) -> set[str]:
    names = {field.alias for field in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names


def refuse_unknown_query_parameters(request: Request) -> None:
    """A router dependency: a query parameter the route does not take (`?statsu=dead`, which would
    list everything) is refused with the closest one it takes (422)."""
    dependant: Dependant | None = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    known = _query_names(dependant)
    unknown = [name for name in dict.fromkeys(request.query_params) if name not in known]
    if unknown:
        raise HTTPException(422, "; ".join(unknown_name("query parameter", name, known) for name in unknown))
