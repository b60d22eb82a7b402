"""The app's exception handlers: every error leaves as a problem (api/problems.py), whoever raised it."""

from __future__ import annotations

import logging
from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from api.problems import (
    INTERNAL,
    INVALID_INPUT,
    QUERY_TOO_LARGE,
    STORE_UNAVAILABLE,
    UNAVAILABLE,
    FieldProblem,
    ProblemError,
    describe_errors,
    kind_of_status,
    problem_response,
)
from api.strict_input import field_errors
from store.base import InvalidCursor, QueryTooLarge, StoreUnavailable
from store.influx_store import InfluxQueryError
from store.relational import RelationalUnavailable

log = logging.getLogger(__name__)

# What a client should wait before asking again while the store is unreachable: long enough not to add
# load to a recovering InfluxDB, short enough that dashboards come back soon after it does.
STORE_RETRY_AFTER_S: Final = 5


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc, ProblemError):
            return problem_response(exc.kind, str(exc.detail), errors=exc.errors, headers=exc.headers)
        kind = kind_of_status(exc.status_code)
        detail = exc.detail if isinstance(exc.detail, str) else kind.title
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI could not even decode the body to parse it as JSON.
            detail = f"the request body is not UTF-8 (byte {exc.__cause__.start})"
        return problem_response(kind, detail, headers=exc.headers, status=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(request, exc.errors())
        return problem_response(INVALID_INPUT, describe_errors(errors), errors=errors)

    @app.exception_handler(InvalidCursor)
    async def invalid_cursor(_: Request, exc: InvalidCursor) -> JSONResponse:
        message = "not a `next_cursor` this API returned for this query"
        return problem_response(INVALID_INPUT, f"query `cursor`: {message}",
                                errors=[FieldProblem(location="query", field="cursor", message=message)])

    @app.exception_handler(QueryTooLarge)
    async def query_too_large(_: Request, exc: QueryTooLarge) -> JSONResponse:
        return problem_response(QUERY_TOO_LARGE, str(exc))

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        # One line per refused request and no traceback: an outage is an operating condition, not a bug.
        log.warning("%s %s answered 503: %s", request.method, request.url.path, exc)
        return problem_response(
            STORE_UNAVAILABLE, f"the store cannot be reached; retry after {STORE_RETRY_AFTER_S} s",
            headers={"Retry-After": str(STORE_RETRY_AFTER_S)})

    @app.exception_handler(RelationalUnavailable)
    async def relational_unavailable(request: Request, exc: RelationalUnavailable) -> JSONResponse:
        # Keys, subscriptions or devices (PostgreSQL) unreachable: an outage, as the store's above.
        log.warning("%s %s answered 503: %s", request.method, request.url.path, exc)
        return problem_response(
            UNAVAILABLE, f"the database of keys, subscriptions and devices cannot be reached; retry after "
                         f"{STORE_RETRY_AFTER_S} s",
            headers={"Retry-After": str(STORE_RETRY_AFTER_S)})

    @app.exception_handler(InfluxQueryError)
    async def store_error(request: Request, exc: InfluxQueryError) -> JSONResponse:
        log.error("%s %s: the store refused the query", request.method, request.url.path, exc_info=exc)
        return problem_response(INTERNAL, "the store refused the query; the error is logged")

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        # Starlette still logs the traceback after this answer: a 500 is a bug to fix.
        return problem_response(INTERNAL, "an internal error occurred; it is logged")
