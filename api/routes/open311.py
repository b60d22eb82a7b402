"""Open311 GeoReport v2 (https://wiki.open311.org/GeoReport_v2) on the cases: a citizen app or a 12345
hotline system lists the services, files a request, and follows it.

A request is a case (docs/cases.md): its service gives the case type, its point the grid, district and
department tags (geo), and `cases.routes` the owning department, category and priority, as for a
violation of that type. Its status is the case's: `closed` once the case is closed, `open` before.

This API follows the GeoReport v2 wire format rather than citywatch's: errors are the spec's array
`[{"code": 400, "description": "..."}]`, not RFC 7807 problems; the POST takes form fields (or the same
names in a JSON object) and the key as `api_key` too; only JSON is served (`.xml` answers 406). The
reporter's contact details are stored apart (store/open311.py) and never answered; descriptions are
answered with email addresses and phone numbers blanked, media_url only to a key with `plates`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.access.control import AuthError, AuthReason
from api.access.deps import token_of
from api.access.keys import ApiKey, Scope
from api.links import http_url
from core.masking import mask_plate
from core.open311_settings import AttributeDatatype, Open311Service, Open311Settings, ServiceAttribute
from processors.cases.model import CaseState, Resolution
from processors.cases.service import CaseService, NewCase
from store.open311 import FiledRequest, Open311Store, Reporter, RequestQuery, ServiceRequest
from store.relational import RelationalUnavailable

log = logging.getLogger(__name__)

PREFIX: Final = "/open311/v2"
# GeoReport v2: a description is free text "limited to 4,000 characters"; a search spans at most 90 days.
MAX_DESCRIPTION: Final = 4000
MAX_URL: Final = 2000
MAX_FIELD: Final = 200
MAX_CODES: Final = 100
MAX_SPAN: Final = timedelta(days=90)


class Open311Error(Exception):
    """Answered as the spec's error array, with `status` as the HTTP status and the error's code."""

    def __init__(self, status: int, description: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.headers = dict(headers or {})


# As the rest of the API says while its database is down (api/error_handlers.py), in the spec's shape.
RETRY_AFTER_S: Final = 5


@contextmanager
def _database_outage_as_error() -> Iterator[None]:
    try:
        yield
    except RelationalUnavailable as exc:
        log.warning("open311 answered 503: %s", exc)
        raise Open311Error(503, f"the cases' database cannot be reached; retry after {RETRY_AFTER_S} s",
                           {"Retry-After": str(RETRY_AFTER_S)}) from exc


def install_error_handler(app: FastAPI) -> None:
    @app.exception_handler(Open311Error)
    async def open311_error(_: Request, exc: Open311Error) -> JSONResponse:
        return JSONResponse([{"code": exc.status, "description": exc.description}], exc.status,
                            headers=exc.headers)


class ErrorOut(BaseModel):
    code: int = Field(description="The HTTP status.")
    description: str


def _errors(description: str, **headers: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"description": description, "model": list[ErrorOut]}
    if headers:
        doc["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                          for name, text in headers.items()}
    return doc


COMMON_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    403: _errors("A missing or invalid key, or one without the scope (`cases:read` to read unless "
                 "`cases.open311.public_read`; `cases:write` to file)"),
    404: _errors("Open311 is not enabled, or no such service or request"),
    406: _errors("A format other than json (.xml is not served)"),
    429: _errors("Too many requests or unknown keys", **{"Retry-After": "Seconds to wait."}),
    503: _errors("Cases are not available in this instance, or their database cannot be reached",
                 **{"Retry-After": "Seconds to wait (while the database cannot be reached)."}),
}
router = APIRouter(prefix=PREFIX, tags=["open311"], responses=COMMON_ERRORS)


class ServiceOut(BaseModel):
    service_code: str
    service_name: str
    description: str
    metadata: bool = Field(description="true: the service has attributes (GET services/{code}.json).")
    type: Literal["realtime"] = Field(description="The request id is answered at once.")
    keywords: str = Field(description="Comma separated.")
    group: str


class ValueOut(BaseModel):
    key: str
    name: str


class AttributeOut(BaseModel):
    variable: bool
    code: str
    datatype: AttributeDatatype
    required: bool
    datatype_description: str | None
    order: int
    description: str
    values: list[ValueOut]


class ServiceDefinitionOut(BaseModel):
    service_code: str
    attributes: list[AttributeOut]


class CreatedOut(BaseModel):
    service_request_id: str
    service_notice: str | None
    account_id: str | None


class RequestOut(BaseModel):
    service_request_id: str
    status: Literal["open", "closed"]
    status_notes: str | None
    service_name: str
    service_code: str
    description: str
    agency_responsible: str | None
    service_notice: str | None
    requested_datetime: str
    updated_datetime: str
    expected_datetime: str | None
    address: str | None
    address_id: str | None
    zipcode: str | None
    lat: float | None
    long: float | None
    media_url: str | None = Field(description="Only to a key with `plates` (the photo may show people or "
                                  "plates); null otherwise.")


# What a citizen is told about each state of the case (not the workers' notes: they may name people).
_STATUS_NOTES: Final[dict[CaseState, str]] = {
    CaseState.REGISTERED: "Registered; waiting to be dispatched.",
    CaseState.DISPATCHED: "Dispatched to the responsible agency.",
    CaseState.ACCEPTED: "Accepted by the responsible agency.",
    CaseState.IN_PROGRESS: "Work is in progress.",
    CaseState.REPORTED_DONE: "Reported done; waiting for verification.",
    CaseState.VERIFIED: "The work was verified.",
    CaseState.REOPENED: "Reopened for more work.",
    CaseState.RETURNED: "Being passed to another agency.",
    CaseState.SUSPENDED: "On hold.",
}
_CLOSED_NOTES: Final[dict[Resolution | None, str]] = {
    Resolution.VERIFIED_BY_PERSON: "Closed: the work was done and verified.",
    Resolution.VERIFIED_BY_SENSOR: "Closed: the work was done and the sensors confirmed it.",
    Resolution.RESOLVED_BY_ITSELF: "Closed: it was resolved before work started.",
    None: "Closed.",
}
_EMAIL: Final = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Seven or more digits, with spaces, dots, dashes or brackets between them: a phone number.
_PHONE: Final = re.compile(r"\+?\d(?:[\s().-]*\d){6,}")
# A mainland licence plate: the province's character, the city's letter, five or six letters and digits.
_PROVINCES: Final = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
_PLATE: Final = re.compile(f"[{_PROVINCES}][A-Z][A-Z0-9]{{5,6}}")
BLANKED: Final = "[removed]"


def without_contacts(text: str, *, plates: bool = False) -> str:
    """`text` with email addresses and phone numbers blanked, and without `plates` licence plates masked
    as everywhere else (粤B1****): a citizen may write them in."""
    text = _PHONE.sub(BLANKED, _EMAIL.sub(BLANKED, text))
    return text if plates else _PLATE.sub(lambda plate: mask_plate(plate.group()), text)


def _open311(request: Request) -> tuple[CaseService, Open311Store, Open311Settings]:
    services = request.state.services
    cases, store = services.cases, services.open311
    if cases is None or store is None:
        raise Open311Error(503, "this instance does not keep cases")
    settings: Open311Settings = cases.router.settings.open311
    if not settings.enabled:
        raise Open311Error(404, "Open311 is not enabled here (cases.open311.enabled)")
    return cases, store, settings


def _json_only(format: str) -> None:
    if format != "json":
        raise Open311Error(406, f"only json is served here: ask for .json, not .{format[:20]}")


def _key(request: Request, token: str | None, scope: Scope) -> ApiKey:
    """The key of `token` with `scope`; the spec's 403 for a missing or invalid one."""
    services = request.state.services
    client = request.client.host if request.client is not None else None
    try:
        with _database_outage_as_error():  # the keys may live in PostgreSQL
            key = services.access.authorize(token, [scope], client)
    except AuthError as exc:
        services.metrics.api_auth_refused.labels(exc.reason.value).inc()
        if exc.reason in (AuthReason.THROTTLED, AuthReason.RATE_LIMITED):
            raise Open311Error(429, exc.detail, {"Retry-After": exc.headers.get("Retry-After", "1")}) from exc
        if exc.reason is AuthReason.MISSING_KEY:
            raise Open311Error(403, "an API key is required: send it as `api_key`, `Authorization: Bearer "
                                    "<key>` or `X-API-Key: <key>`") from exc
        raise Open311Error(403, exc.detail) from exc
    request.state.api_key = key
    return key


def _reader(request: Request, settings: Open311Settings) -> ApiKey | None:
    """The reading key; None for an anonymous read when reading is public."""
    token = token_of(request)
    if token is None and settings.public_read:
        return None
    return _key(request, token, Scope.CASES_READ)


def _w3(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_w3(name: str, value: str) -> int:
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        if parsed.tzinfo is None:
            raise Open311Error(400, f"{name} {value[:40]!r} has no time zone (Z or an offset such as +08:00)")
        return int(parsed.timestamp() * 1000)
    except (ValueError, OverflowError):  # not a date-time, or one beyond the calendar (year 0 in UTC)
        raise Open311Error(400, f"{name} {value[:40]!r} is not a w3 date-time such as "
                                "2010-01-01T00:00:00Z") from None


def _service_out(service: Open311Service) -> dict[str, Any]:
    return ServiceOut(service_code=service.code, service_name=service.name, description=service.description,
                      metadata=bool(service.attributes), type="realtime",
                      keywords=", ".join(service.keywords), group=service.group).model_dump(mode="json")


def _attribute_out(attribute: ServiceAttribute) -> dict[str, Any]:
    return AttributeOut(variable=attribute.variable, code=attribute.code, datatype=attribute.datatype,
                        required=attribute.required, datatype_description=attribute.datatype_description,
                        order=attribute.order, description=attribute.description,
                        values=[ValueOut(key=value.key, name=value.name) for value in attribute.values],
                        ).model_dump(mode="json")


def _request_out(found: ServiceRequest, settings: Open311Settings, key: ApiKey | None) -> dict[str, Any]:
    filed = found.request
    service = settings.service(filed.service_code)
    closed = found.state is CaseState.CLOSED
    notes = _CLOSED_NOTES.get(found.resolution, "Closed.") if closed else _STATUS_NOTES.get(found.state)
    plates = key is not None and key.allows(Scope.PLATES)
    media = filed.media_url if plates else None
    return RequestOut(
        service_request_id=filed.case_id, status="closed" if closed else "open", status_notes=notes,
        service_name=service.name if service is not None else filed.service_code,
        service_code=filed.service_code, description=without_contacts(found.description, plates=plates),
        agency_responsible=found.department,
        service_notice=service.notice if service is not None else None,
        requested_datetime=_w3(filed.requested_time_ms), updated_datetime=_w3(found.updated_time_ms),
        expected_datetime=None, address=filed.address, address_id=filed.address_id, zipcode=None,
        lat=found.lat, long=found.lon, media_url=media).model_dump(mode="json")


def _shown(request: Request, key: ApiKey | None, items: list[ServiceRequest]) -> None:
    """An answer with media links to a key with `plates` is audited, as the cases' photo links are."""
    if key is not None and key.allows(Scope.PLATES):
        disclosed = [found.request.case_id for found in items if found.request.media_url]
        if disclosed:
            request.state.services.access.audit(key, f"GET {request.url.path}",
                                                "media of open311 requests " + ",".join(disclosed))


# Declared as `json` only, checked by the route itself so that `.xml` gets the spec's error (406).
FormatParam = Annotated[str, Path(description="The response format: json (xml is not served).",
                                  json_schema_extra={"enum": ["json"]})]
JurisdictionParam = Annotated[str | None, Query(description="Ignored: this server serves one jurisdiction.")]


@router.get("/services.{format}", response_model=list[ServiceOut], summary="Open311: the services")
def list_services(request: Request, format: FormatParam,
                  jurisdiction_id: JurisdictionParam = None) -> list[dict[str, Any]]:
    """GeoReport v2 "GET Service List"; `format` must be `json`."""
    _json_only(format)
    _, _, settings = _open311(request)
    _reader(request, settings)
    return [_service_out(service) for service in settings.services]


@router.get("/services/{service_code}.{format}", response_model=ServiceDefinitionOut,
            summary="Open311: a service's definition (its attributes)")
def service_definition(request: Request, service_code: str, format: FormatParam,
                       jurisdiction_id: JurisdictionParam = None) -> dict[str, Any]:
    """GeoReport v2 "GET Service Definition"."""
    _json_only(format)
    _, _, settings = _open311(request)
    _reader(request, settings)
    service = _service(settings, service_code)
    return ServiceDefinitionOut(
        service_code=service.code,
        attributes=[AttributeOut.model_validate(_attribute_out(a))
                    for a in sorted(service.attributes, key=lambda a: a.order)]).model_dump(mode="json")


def _service(settings: Open311Settings, code: str) -> Open311Service:
    service = settings.service(code)
    if service is None:
        raise Open311Error(404, f"service_code {code[:64]!r} was not found; GET services.json lists them")
    return service


_STRING: Final = {"type": "string"}
_POST_BODY_SCHEMA: Final = {
    "type": "object",
    "required": ["service_code"],
    "properties": {
        "api_key": {**_STRING, "description": "A key with cases:write (or send it in a header)."},
        "jurisdiction_id": {**_STRING, "description": "Ignored: one jurisdiction."},
        "service_code": _STRING,
        "lat": {"type": "number", "minimum": -90, "maximum": 90},
        "long": {"type": "number", "minimum": -180, "maximum": 180},
        "address_string": _STRING, "address_id": _STRING,
        "email": _STRING, "device_id": _STRING, "account_id": _STRING, "first_name": _STRING,
        "last_name": _STRING, "phone": _STRING,
        "description": {**_STRING, "maxLength": MAX_DESCRIPTION},
        "media_url": {**_STRING, "format": "uri"},
    },
    "additionalProperties": {"description": "attribute[code]=value, attribute[code][]=value ..."},
}


@router.post(
    "/requests.{format}", status_code=201, response_model=list[CreatedOut],
    summary="Open311: file a request (it becomes a routed case)",
    responses={400: _errors("A missing or invalid field: the description names it")},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": _POST_BODY_SCHEMA},
        "application/json": {"schema": _POST_BODY_SCHEMA}}}})
async def create_request(request: Request, format: FormatParam) -> JSONResponse:
    """GeoReport v2 "POST Service Request": form fields (or a JSON object with the same names; attributes
    as `attribute[code]` or `{"attribute": {"code": value}}`); a location is `lat` and `long`,
    `address_string` or `address_id`. The key (`cases:write`) as `api_key` or in a header."""
    _json_only(format)
    cases, _, settings = _open311(request)
    fields = _fields(await request.body(), request.headers.get("content-type", ""))
    token = _one(fields, "api_key") or token_of(request)
    key = _key(request, token, Scope.CASES_WRITE)
    with _database_outage_as_error():
        created = await run_in_threadpool(_file, request, cases, settings, fields, key)
    return JSONResponse([created], 201)


def _file(request: Request, cases: CaseService, settings: Open311Settings,
          fields: dict[str, list[str]], key: ApiKey) -> dict[str, Any]:
    code = _one(fields, "service_code")
    if not code:
        raise Open311Error(400, "service_code was not provided; GET services.json lists them")
    service = _service(settings, code)
    lat, lon = _point(fields)
    address, address_id = _one(fields, "address_string"), _one(fields, "address_id")
    if lat is None and not address and not address_id:
        raise Open311Error(400, "a location is required: lat and long, address_string or address_id")
    attributes = _attributes(service, fields)
    description = _one(fields, "description") or service.name
    media_url = _one(fields, "media_url")
    try:
        http_url(media_url)
    except ValueError as exc:
        raise Open311Error(400, f"media_url {exc}") from exc
    reporter = Reporter(**{name: _one(fields, name) for name in (
        "email", "phone", "first_name", "last_name", "device_id", "account_id")})
    geo = request.state.services.geo
    tags = geo.tags_at(service.case_type, lon, lat) if geo is not None and lat is not None \
        and lon is not None else {}
    new = cases.routed(NewCase(type=service.case_type, description=description, lat=lat, lon=lon,
                               photo_url=media_url), tags)
    # The case and the request's records in one transaction: both stored, or neither.
    case = cases.create(new, key.key_id, along=lambda tx, case: Open311Store.add_in(tx.executor, FiledRequest(
        case_id=case.case_id, service_code=service.code, requested_time_ms=case.created_time_ms,
        address=address, address_id=address_id, media_url=media_url, attributes=attributes), reporter))
    return CreatedOut(service_request_id=case.case_id, service_notice=service.notice,
                      account_id=reporter.account_id).model_dump(mode="json")


def _fields(body: bytes, content_type: str) -> dict[str, list[str]]:
    """The POST's fields, name -> values, from a form or a JSON object."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Open311Error(400, f"the request body is not UTF-8 (byte {exc.start})") from None
    fields: dict[str, list[str]] = {}
    if content_type.split(";")[0].strip().lower() == "application/json":
        try:
            data = json.loads(text)
        except ValueError:
            raise Open311Error(400, "the request body is not JSON") from None
        if not isinstance(data, dict):
            raise Open311Error(400, "the request body must be a JSON object of the form's fields")
        for name, value in data.items():
            if name == "attribute" and isinstance(value, dict):
                for code, answer in value.items():
                    fields[f"attribute[{code}]"] = _json_values(f"attribute[{code}]", answer)
            elif value is not None:
                fields[name] = _json_values(name, value)
    else:
        for name, value in parse_qsl(text, keep_blank_values=True):
            fields.setdefault(name.removesuffix("[]"), []).append(value)
    for name, values in fields.items():
        if any("\x00" in value for value in (name, *values)):
            raise Open311Error(400, f"{name[:40]} holds a NUL character")
    return fields


def _json_values(name: str, value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values):
        raise Open311Error(400, f"{name[:40]} must be a string or a number")
    return [str(v) for v in values]


def _one(fields: Mapping[str, Sequence[str]], name: str) -> str | None:
    """A field's value; empty is absent (GeoReport v2 "Optional Arguments")."""
    values = fields.get(name)
    if not values or not values[-1].strip():
        return None
    value = values[-1].strip()
    limit = {"description": MAX_DESCRIPTION, "media_url": MAX_URL}.get(name, MAX_FIELD)
    if len(value) > limit:
        raise Open311Error(400, f"{name} is longer than {limit} characters")
    return value


def _point(fields: Mapping[str, Sequence[str]]) -> tuple[float | None, float | None]:
    lat, lon = _one(fields, "lat"), _one(fields, "long")
    if lat is None and lon is None:
        return None, None
    if lat is None or lon is None:
        raise Open311Error(400, "lat and long both need to be sent")
    try:
        point = float(lat), float(lon)
    except ValueError:
        raise Open311Error(400, f"lat {lat[:30]!r} and long {lon[:30]!r} must be WGS84 degrees") from None
    if not all(math.isfinite(v) for v in point) or not (-90 <= point[0] <= 90 and -180 <= point[1] <= 180):
        raise Open311Error(400, "lat must be within -90..90 and long within -180..180")
    return point


def _attributes(service: Open311Service, fields: Mapping[str, Sequence[str]]) -> dict[str, str | list[str]]:
    by_code = {attribute.code: attribute for attribute in service.attributes}
    answers: dict[str, str | list[str]] = {}
    for name, values in fields.items():
        if not name.startswith("attribute["):
            continue
        code = name.removeprefix("attribute[").removesuffix("]")
        attribute = by_code.get(code)
        if attribute is None:
            raise Open311Error(400, f"attribute[{code[:40]}] is not an attribute of service {service.code}")
        given = [value.strip() for value in values if value.strip()]
        if any(len(value) > MAX_DESCRIPTION for value in given):
            raise Open311Error(400, f"attribute[{code}] is longer than {MAX_DESCRIPTION} characters")
        if given:
            answers[code] = _answer(service, attribute, given)
    for attribute in service.attributes:
        if attribute.required and attribute.variable and attribute.code not in answers:
            raise Open311Error(400, f"attribute[{attribute.code}] is required for service {service.code}: "
                                    f"{attribute.description}")
    return answers


def _answer(service: Open311Service, attribute: ServiceAttribute, given: list[str]) -> str | list[str]:
    name = f"attribute[{attribute.code}]"
    datatype = attribute.datatype
    if datatype is AttributeDatatype.MULTIVALUELIST or datatype is AttributeDatatype.SINGLEVALUELIST:
        keys = [value.key for value in attribute.values]
        unknown = [value for value in given if value not in keys]
        if unknown:
            raise Open311Error(400, f"{name} {unknown[0][:40]!r} is not one of {', '.join(keys)}")
        if datatype is AttributeDatatype.MULTIVALUELIST:
            return given
    if len(given) > 1:
        raise Open311Error(400, f"{name} takes one value for service {service.code}")
    value = given[0]
    if datatype is AttributeDatatype.NUMBER:
        try:
            if not math.isfinite(float(value)):
                raise ValueError(value)
        except ValueError:
            raise Open311Error(400, f"{name} {value[:40]!r} is not a number") from None
    if datatype is AttributeDatatype.DATETIME:
        _parse_w3(name, value)
    if datatype is AttributeDatatype.STRING and "\n" in value:
        raise Open311Error(400, f"{name} is a string without line breaks")
    return value


CommaList = Annotated[str | None, Query(description="Comma separated.")]


@router.get("/requests.{format}", response_model=list[RequestOut], summary="Open311: filed requests",
            responses={400: _errors("A filter that is not understood: the description names it")})
def list_requests(
    request: Request, format: FormatParam,
    service_request_id: CommaList = None,
    service_code: CommaList = None,
    start_date: Annotated[str | None, Query(description="w3 date-time, e.g. 2010-01-01T00:00:00Z.")] = None,
    end_date: Annotated[str | None, Query(description="w3 date-time, e.g. 2010-01-01T00:00:00Z.")] = None,
    status: Annotated[str | None, Query(description="open, closed or open,closed.")] = None,
    jurisdiction_id: JurisdictionParam = None,
) -> list[dict[str, Any]]:
    """GeoReport v2 "GET Service Requests", newest first, at most 1000: `service_request_id` overrides every
    other filter; without dates the last 90 days; a range may not span more than 90 days."""
    _json_only(format)
    _, store, settings = _open311(request)
    key = _reader(request, settings)
    query = _query(service_request_id, service_code, start_date, end_date, status)
    with _database_outage_as_error():
        found = store.query(query)
        _shown(request, key, found)
    return [_request_out(item, settings, key) for item in found]


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _query(ids: str | None, codes: str | None, start: str | None, end: str | None,
           status: str | None) -> RequestQuery:
    case_ids = _split(ids)
    if case_ids:
        return RequestQuery(case_ids=case_ids[:1000])
    statuses = set(_split(status))
    if statuses - {"open", "closed"}:
        raise Open311Error(400, f"status must be open, closed or open,closed, got {status!r:.40}")
    start_ms = _parse_w3("start_date", start) if start and start.strip() else None
    end_ms = _parse_w3("end_date", end) if end and end.strip() else None
    span_ms = int(MAX_SPAN.total_seconds() * 1000)
    if end_ms is None:
        end_ms = start_ms + span_ms if start_ms is not None else None
    if start_ms is None and end_ms is not None:
        start_ms = end_ms - span_ms
    if start_ms is not None and end_ms is not None:
        if end_ms < start_ms:
            raise Open311Error(400, "end_date is before start_date")
        if end_ms - start_ms > span_ms:
            raise Open311Error(400, "start_date to end_date may not span more than 90 days")
    else:
        start_ms = int(datetime.now(UTC).timestamp() * 1000) - span_ms
    service_codes = _split(codes)
    if len(service_codes) > MAX_CODES:
        raise Open311Error(400, f"service_code lists more than {MAX_CODES} codes")
    return RequestQuery(service_codes=service_codes, from_ms=start_ms, to_ms=end_ms,
                        open=None if len(statuses) != 1 else statuses == {"open"})


@router.get("/requests/{service_request_id}.{format}", response_model=list[RequestOut],
            summary="Open311: one filed request")
def get_request(request: Request, service_request_id: str, format: FormatParam,
                jurisdiction_id: JurisdictionParam = None) -> list[dict[str, Any]]:
    """GeoReport v2 "GET Service Request": an array of one request."""
    _json_only(format)
    _, store, settings = _open311(request)
    key = _reader(request, settings)
    with _database_outage_as_error():
        found = store.get(service_request_id)
        if found is None:
            raise Open311Error(404, f"service_request_id {service_request_id[:40]!r} was not found")
        _shown(request, key, [found])
    return [_request_out(found, settings, key)]
