"""Names a client got wrong are refused, never ignored: a misspelt parameter or body key would otherwise
silently change the answer (`limt=5` pages by 100, `typ=bin_overflow` matches everything).

Each refusal names the closest valid name, so the client sees what it meant.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi.routing import APIRoute, APIWebSocketRoute
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from api.problems import INVALID_INPUT, FieldProblem, ProblemError, describe_errors

if TYPE_CHECKING:
    from fastapi.dependencies.models import Dependant

_QUOTED = re.compile(r"'([^']*)'")
_LOCATIONS = ("query", "path", "header", "cookie", "body")


def closest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name most like `name`, or None when nothing is close."""
    matches = difflib.get_close_matches(name, sorted(valid), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_name_message(what: str, suggestion: str | None) -> str:
    return f"unknown {what}; did you mean `{suggestion}`?" if suggestion else f"unknown {what}"


def _query_names(route: APIRoute | APIWebSocketRoute) -> frozenset[str]:
    # A walk over a handful of dependencies: cheaper than a cache that would outlive the app.
    names: set[str] = set()
    pending: list[Dependant] = [route.dependant]
    while pending:
        dependant = pending.pop()
        names.update(param.alias for param in dependant.query_params)
        pending.extend(dependant.dependencies)
    return frozenset(names)


def reject_unknown_query_parameters(connection: HTTPConnection) -> None:
    """A dependency of every /v1 route and stream: a query parameter it does not declare is a 422 (on a
    WebSocket, a refused handshake with the same problem)."""
    route = connection.scope.get("route")
    if not isinstance(route, APIRoute | APIWebSocketRoute) or not route.path_format.startswith("/v1/"):
        return
    known = _query_names(route)
    unknown = sorted({name for name in connection.query_params if name not in known})
    if unknown:
        errors = []
        for name in unknown:
            suggestion = closest(name, known)
            errors.append(FieldProblem(location="query", field=name, closest=suggestion,
                                       message=unknown_name_message("parameter", suggestion)))
        raise ProblemError(INVALID_INPUT, describe_errors(errors), errors=errors)


def field_errors(connection: HTTPConnection, errors: Sequence[Any]) -> list[FieldProblem]:
    """FastAPI's validation errors as problem entries: location, dotted field, message, and for an
    unknown key or a value outside a fixed set, the closest valid one."""
    route = connection.scope.get("route")
    problems: list[FieldProblem] = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        location = loc[0] if loc and loc[0] in _LOCATIONS else "body"
        path = loc[1:] if loc and loc[0] in _LOCATIONS else loc
        field = ".".join(str(part) for part in path) or location
        message = str(error.get("msg", "invalid"))
        suggestion = None
        kind = error.get("type")
        if kind == "json_invalid":  # FastAPI puts the character position where the field would be
            field = location
            message = f"not valid JSON (at character {path[0]})" if path else "not valid JSON"
        elif kind == "extra_forbidden" and path and isinstance(route, APIRoute):
            suggestion = closest(str(path[-1]), _body_names(route, path[:-1]))
            message = unknown_name_message("field", suggestion)
        elif kind in ("enum", "literal_error") and isinstance(error.get("input"), str):
            expected = _QUOTED.findall(str((error.get("ctx") or {}).get("expected", "")))
            suggestion = closest(error["input"], expected)
            if suggestion:
                message = f"{message}; did you mean `{suggestion}`?"
        problems.append(FieldProblem(location=location, field=field, message=message, closest=suggestion))
    return problems


def _body_names(route: APIRoute, path: Sequence[Any]) -> list[str]:
    """The field names of the body model at `path` (below `body`), following nested models, lists and
    dicts; empty when there is no model there."""
    if route.body_field is None:
        return []
    annotation: Any = route.body_field.field_info.annotation
    for part in path:
        annotation = _step(_non_null(annotation), part)
        if annotation is None:
            return []
    model = _non_null(annotation)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _step(annotation: Any, part: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = {field.alias or name: field for name, field in annotation.model_fields.items()}
        return fields[part].annotation if part in fields else None
    args = typing.get_args(annotation)  # list[X] and dict[str, X]: the items are X
    return args[-1] if args else None


def _non_null(annotation: Any) -> Any:
    """X for `X | None`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation
