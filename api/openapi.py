"""The published contract: every operation lists the error statuses it can answer, each with the problem
schema, and the interactive docs are served from the package, with no CDN (a city control network is
often offline)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse
from swagger_ui_bundle import swagger_ui_path

from api.deps import get_store
from api.problems import FieldProblem, Problem, problem_response_doc

DOCS_ASSETS: Final = "/docs/assets"

_RETRY_AFTER: Final = {"Retry-After": {"description": "Seconds to wait before asking again.",
                                       "schema": {"type": "integer"}}}
_AUTH_RESPONSES: Final = {
    "401": problem_response_doc("No API key, or an unknown or revoked one"),
    "403": problem_response_doc("The API key lacks the scope of this endpoint"),
    "429": {**problem_response_doc("The key's rate limit is exceeded, or too many unknown keys came from "
                                   "this address; wait Retry-After seconds"), "headers": _RETRY_AFTER},
}
_INVALID: Final = problem_response_doc(
    "Invalid input: `errors` names each wrong field; an unknown parameter, body field or violation type "
    "comes with the closest valid name")
_UNREADABLE_BODY: Final = problem_response_doc("The body is not UTF-8 JSON")
_NOT_FOUND: Final = problem_response_doc("Nothing has the identifier in the path")
_STORE_DOWN: Final = {**problem_response_doc("The store cannot be reached; wait Retry-After seconds"),
                      "headers": _RETRY_AFTER}


def install_problem_docs(app: FastAPI) -> None:
    """Wrap `app.openapi` so the generated document declares the problem responses of every operation."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_problems(app, generate())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_problems(app: FastAPI, schema: dict[str, Any]) -> None:
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["FieldProblem"] = FieldProblem.model_json_schema(ref_template="#/components/schemas/{model}")
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    problem.pop("$defs", None)
    schemas["Problem"] = problem
    # Route contexts: the routes as included (with their router's prefix and dependencies).
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        path = route.path_format or ""
        for method in route.methods or ():
            operation = schema["paths"][path][method.lower()]
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for status, response in responses.items():
                # Errors declared by a route without a body, and FastAPI's own 422: a problem body.
                if status.startswith(("4", "5")) and _is_default_or_empty(response):
                    responses[status] = {**problem_response_doc(response.get("description", "")),
                                         **{k: v for k, v in response.items() if k == "headers"}}
            if "security" in operation:
                for status, response in _AUTH_RESPONSES.items():
                    responses.setdefault(status, response)
            if path.startswith("/v1/") or "422" in responses:
                responses["422"] = _INVALID
            if "requestBody" in operation:
                responses.setdefault("400", _UNREADABLE_BODY)
            if "{" in path:
                responses.setdefault("404", _NOT_FOUND)
            if _uses_store(route):
                responses.setdefault("503", _STORE_DOWN)
    if "/HTTPValidationError" not in json.dumps(schema["paths"]):  # FastAPI's 422 body: replaced everywhere
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def _is_default_or_empty(response: dict[str, Any]) -> bool:
    content = response.get("content")
    if not content:
        return True
    schema = content.get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def _uses_store(route: RouteContext) -> bool:
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        if dependant.call is get_store:
            return True
        pending.extend(dependant.dependencies)
    return False


def serve_offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the pinned swagger-ui-bundle package (assets under /docs/assets)."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} API",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon-32x32.png",
            oauth2_redirect_url=None,
            # Swagger UI would otherwise send the document to an online validator for its badge.
            swagger_ui_parameters={"validatorUrl": None},
        )

    app.add_route("/docs", swagger_ui, include_in_schema=False)
