"""Every error the API answers, in one format: problem details (RFC 9457, formerly RFC 7807).

A body is `application/problem+json` with `type` (a stable URI naming the kind of problem, for programs),
`title` (its short human name), `status`, `detail` (what was wrong in this request) and, for invalid
input, `errors`: one entry per field, with the closest valid name when a name was not known. The kinds
are listed in PROBLEM_KINDS and in docs/api.md#errors; a client branches on `type`, never on `detail`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
TYPE_PREFIX: Final = "urn:citywatch:problem:"

Location = Literal["query", "path", "header", "cookie", "body"]


class FieldProblem(BaseModel):
    location: Location = Field(description="Where the field is: query, path, header, cookie or body.")
    field: str = Field(description="The field, dotted for nested body fields (`scopes.0`); for an "
                                   "unknown name, the name as sent; the location itself when the whole "
                                   "body is wrong (not JSON, missing).", examples=["limit"])
    message: str = Field(description="What is wrong with it.", examples=["must be at most 1000"])
    closest: str | None = Field(None, description="For an unknown name: the closest valid one, if any.",
                                examples=["bin_overflow"])


class Problem(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str = Field(description="The kind of problem, a URI to branch on (docs/api.md#errors).",
                      examples=[f"{TYPE_PREFIX}invalid-input"])
    title: str = Field(description="The kind of problem in words; the same for every problem of a type.",
                       examples=["Invalid input"])
    status: int = Field(description="The HTTP status code.", examples=[422])
    detail: str = Field(description="What was wrong with this request.",
                        examples=["query `limt`: unknown parameter; did you mean `limit`?"])
    errors: list[FieldProblem] | None = Field(
        None, description="Only for invalid input (422): one entry per field that was wrong.")


@dataclass(frozen=True)
class ProblemKind:
    name: str
    status: int
    title: str

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.name


INVALID_INPUT: Final = ProblemKind("invalid-input", 422, "Invalid input")
QUERY_TOO_LARGE: Final = ProblemKind("query-too-large", 422, "Query too large")
UNAUTHORIZED: Final = ProblemKind("unauthorized", 401, "API key missing or unknown")
FORBIDDEN: Final = ProblemKind("forbidden", 403, "Scope missing")
NOT_FOUND: Final = ProblemKind("not-found", 404, "Not found")
METHOD_NOT_ALLOWED: Final = ProblemKind("method-not-allowed", 405, "Method not allowed")
CONFLICT: Final = ProblemKind("conflict", 409, "Conflict")
LAST_ADMIN_KEY: Final = ProblemKind("last-admin-key", 409, "The last admin key cannot be revoked")
# People's actions on a violation its state does not allow (api/violation_actions.py `refusal`).
ALREADY_ACKNOWLEDGED: Final = ProblemKind("already-acknowledged", 409,
                                          "The violation is already acknowledged")
ALREADY_ASSIGNED: Final = ProblemKind("already-assigned", 409,
                                      "The violation is already assigned to that assignee")
VIOLATION_DISMISSED: Final = ProblemKind("violation-dismissed", 409,
                                         "The violation was dismissed as false; only notes can be added")
ILLEGAL_TRANSITION: Final = ProblemKind("illegal-transition", 409, "Case transition not allowed")
# A report asked for a period still running (docs/indices.md).
PERIOD_NOT_ENDED: Final = ProblemKind("period-not-ended", 409, "The period has not ended")
RATE_LIMITED: Final = ProblemKind("rate-limited", 429, "Rate limit exceeded")
AUTH_THROTTLED: Final = ProblemKind("auth-throttled", 429, "Too many unknown API keys from this address")
STORE_UNAVAILABLE: Final = ProblemKind("store-unavailable", 503, "Store unavailable")
UNAVAILABLE: Final = ProblemKind("unavailable", 503, "Service unavailable")
INTERNAL: Final = ProblemKind("internal", 500, "Internal error")

PROBLEM_KINDS: Final = (INVALID_INPUT, QUERY_TOO_LARGE, UNAUTHORIZED, FORBIDDEN, NOT_FOUND,
                        METHOD_NOT_ALLOWED, CONFLICT, LAST_ADMIN_KEY, ALREADY_ACKNOWLEDGED, ALREADY_ASSIGNED,
                        VIOLATION_DISMISSED, ILLEGAL_TRANSITION, PERIOD_NOT_ENDED, RATE_LIMITED,
                        AUTH_THROTTLED, STORE_UNAVAILABLE, UNAVAILABLE, INTERNAL)
# The kind of an HTTPException raised with a bare status code.
_KIND_OF_STATUS: Final = {kind.status: kind for kind in (
    INVALID_INPUT, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, METHOD_NOT_ALLOWED, CONFLICT, RATE_LIMITED,
    UNAVAILABLE, INTERNAL)}


class ProblemError(HTTPException):
    """Raised by a route or dependency: answered as a problem of `kind` (an HTTPException underneath, so
    code that only knows FastAPI's exceptions still treats it as one)."""

    def __init__(self, kind: ProblemKind, detail: str, *, errors: Sequence[FieldProblem] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(kind.status, detail, headers)
        self.kind = kind
        self.errors = list(errors) if errors is not None else None


def invalid(field: str, message: str, *, location: Location = "query",
            closest: str | None = None) -> ProblemError:
    """A 422 naming one field: `raise invalid("limit", "must be at most 1000")`."""
    text = f"{location} `{field}`: {message}"
    return ProblemError(INVALID_INPUT, text, errors=[FieldProblem(location=location, field=field,
                                                                  message=message, closest=closest)])


def problem_response(kind: ProblemKind, detail: str, *, errors: Sequence[FieldProblem] | None = None,
                     headers: Mapping[str, str] | None = None, status: int | None = None) -> JSONResponse:
    problem = Problem(type=kind.type, title=kind.title, status=status or kind.status, detail=detail,
                      errors=list(errors) if errors is not None else None)
    return JSONResponse(problem.model_dump(exclude_none=True), status_code=problem.status,
                        headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def kind_of_status(status: int) -> ProblemKind:
    kind = _KIND_OF_STATUS.get(status)
    if kind is not None:
        return kind
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return ProblemKind(f"http-{status}", status, phrase)


def describe_errors(errors: Sequence[FieldProblem]) -> str:
    # A field equal to its location is the whole body (or query): name it once.
    parts = [f"{e.location}: {e.message}" if e.field == e.location
             else f"{e.location} `{e.field}`: {e.message}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def problem_response_doc(description: str) -> dict[str, Any]:
    """An OpenAPI response object whose body is a Problem."""
    return {"description": description,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
