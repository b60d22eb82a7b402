"""FastAPI dependencies: `Depends(require(Scope.X))` on a route or a router checks key, scope and rate.

The key is read from `Authorization: Bearer <key>` or `X-API-Key: <key>` (both declared as security
schemes, so /docs has an Authorize button). Query parameters are deliberately not accepted: URLs end
up in proxy and access logs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from api.access.control import AccessControl, AuthError, AuthReason
from api.access.keys import ApiKey, Scope
from api.problems import AUTH_THROTTLED, FORBIDDEN, RATE_LIMITED, UNAUTHORIZED, ProblemError, ProblemKind

_PROBLEM_OF_REASON: dict[AuthReason, ProblemKind] = {
    AuthReason.MISSING_KEY: UNAUTHORIZED,
    AuthReason.UNKNOWN_KEY: UNAUTHORIZED,
    AuthReason.THROTTLED: AUTH_THROTTLED,
    AuthReason.RATE_LIMITED: RATE_LIMITED,
    AuthReason.MISSING_SCOPE: FORBIDDEN,
}

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")
_bearer = HTTPBearer(auto_error=False, description="An API key as a bearer token.")


def get_access(connection: HTTPConnection) -> AccessControl:
    access: AccessControl = connection.state.services.access
    return access


def token_of(connection: HTTPConnection) -> str | None:
    """The key a request or WebSocket handshake carries, from either header."""
    header = connection.headers.get("x-api-key")
    if header:
        return header
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def require(*scopes: Scope) -> Callable[..., ApiKey]:
    def dependency(
        connection: HTTPConnection,
        access: Annotated[AccessControl, Depends(get_access)],
        _header: Annotated[str | None, Security(_api_key_header)] = None,
        _bearer_token: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    ) -> ApiKey:
        return authorize_connection(connection, access, scopes)

    return dependency


def authorize_connection(connection: HTTPConnection, access: AccessControl,
                         scopes: Sequence[Scope]) -> ApiKey:
    """The key of a request or WebSocket handshake, or a problem: throttled per client address and
    counted by reason the same way on every route."""
    client = connection.client.host if connection.client is not None else None
    try:
        key = access.authorize(token_of(connection), scopes, client)
    except AuthError as exc:
        connection.state.services.metrics.api_auth_refused.labels(exc.reason.value).inc()
        raise ProblemError(_PROBLEM_OF_REASON[exc.reason], exc.detail, headers=exc.headers) from exc
    # Kept for what else the request needs of its key (api/personal_data.py), so it is checked once.
    connection.state.api_key = key
    return key


AccessDep = Annotated[AccessControl, Depends(get_access)]
ViolationReader = Annotated[ApiKey, Depends(require(Scope.VIOLATIONS_READ))]
