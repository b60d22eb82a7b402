"""Civility indices, rankings and published reports (docs/indices.md).

`GET /v1/indices/{index}/{period_kind}/{period_key}` computes an index of a period from the data stored now,
`GET /v1/rankings/...` ranks its places, `GET /v1/reports...` reads the frozen reports and `POST
/v1/reports` publishes one for a period that has ended. Reading needs `indices:read` (rates per place, no
personal data), publishing `reports:write`. Every answer carries the method version that computed it.
"""

from __future__ import annotations

import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field
from starlette.responses import HTMLResponse, JSONResponse, Response

from api.access.deps import require
from api.access.keys import Scope
from api.alerts.strict import StrictModel
from api.deps import ServicesDep
from api.problems import NOT_FOUND, PERIOD_NOT_ENDED, UNAVAILABLE, ProblemError, invalid, problem_response_doc
from api.report_page import render_report
from core.index_settings import PeriodKind
from processors.indices.figures import IndexFigures
from processors.indices.periods import InvalidPeriod, Period, parse_period
from processors.indices.report import REPORT_ID_FORM, split_report_id, write_report_csv
from processors.indices.service import IndexService, PeriodNotEnded

NOT_RUNNING: dict[int | str, dict[str, Any]] = {503: problem_response_doc(
    "Indices are not available in this instance")}
NO_INDEX: dict[int | str, dict[str, Any]] = {
    404: problem_response_doc("No index with that name"),
    422: problem_response_doc("A period key that names no period of its kind")}
READ = [Depends(require(Scope.INDICES_READ))]

indices_router = APIRouter(prefix="/v1/indices", tags=["indices"], responses=NOT_RUNNING, dependencies=READ)
rankings_router = APIRouter(prefix="/v1/rankings", tags=["indices"], responses=NOT_RUNNING, dependencies=READ)
reports_router = APIRouter(prefix="/v1/reports", tags=["indices"], responses=NOT_RUNNING)

Level = Literal["intersection", "grid", "district", "city"]
RankedLevel = Literal["intersection", "grid", "district"]
IndexName = Annotated[str, Path(description="The index, as named in `indices.definitions` (traffic, "
                                            "sanitation by default).")]
KindParam = Annotated[PeriodKind, Path(description="day, week (Monday to Sunday), month, quarter or half.")]
KeyParam = Annotated[str, Path(description="The period: 2026-11-03, 2026-W45, 2026-11, 2026-Q4 or 2026-H2.")]
LevelParam = Annotated[Level, Query(description="intersection, grid, district or city.")]
RankedLevelParam = Annotated[RankedLevel, Query(description="intersection, grid or district.")]
ReportId = Annotated[str, Path(pattern=REPORT_ID_FORM, description="The period's kind and key, e.g. "
                               "month-2026-11.")]


def _service(services: ServicesDep) -> IndexService:
    if services.indices is None:
        raise ProblemError(UNAVAILABLE, "indices are not available in this instance")
    return services.indices


IndicesDep = Annotated[IndexService, Depends(_service)]


class PeriodOut(BaseModel):
    kind: str
    key: str
    first_day: str = Field(description="Its first local day, YYYY-MM-DD.")
    last_day: str = Field(description="Its last local day, included.")
    days: int


class ComponentOut(BaseModel):
    name: str
    weight: float
    numerator: float = Field(description="What broke the rule (or cases closed, on time, reworked).")
    denominator: float = Field(description="What was observed (or cases due).")
    rate: float | None = Field(description="numerator / denominator; null when nothing was counted.")
    min_volume: float = Field(description="The denominator needed in this period to be scored.")
    scored: bool
    score: float | None = Field(description="0-100; null when not scored.")


class PlaceIndexOut(BaseModel):
    place: str
    score: float | None = Field(description="0-100, two decimals: the weighted mean of the scored "
                                "components.")
    grade: str | None
    coverage: float = Field(description="The share of the index's weight scored here, 0-1.")
    components: list[ComponentOut]
    rank: int | None = Field(None, description="Competition rank (ties share one); null: unranked.")
    previous_score: float | None = None
    score_change: float | None = Field(None, description="score − previous period's score.")
    previous_rank: int | None = None
    rank_change: int | None = Field(None, description="previous rank − rank: positive moved up.")
    unranked_reason: str | None = Field(None, description="no_score or low_coverage when unranked.")


class IndexAnswer(BaseModel):
    index: str
    title: str
    period: PeriodOut
    level: str
    time_zone: str
    method_version: str
    places: list[PlaceIndexOut] = Field(description="By place name.")


class RankedOut(BaseModel):
    place: str
    rank: int | None
    score: float | None
    coverage: float
    previous_score: float | None
    score_change: float | None
    previous_rank: int | None
    rank_change: int | None
    reason: str | None


class RankingAnswer(BaseModel):
    index: str
    period: PeriodOut
    previous_period: PeriodOut
    level: str
    method_version: str
    min_coverage: float
    ranked: list[RankedOut] = Field(description="Best first; equal scores share a rank.")
    unranked: list[RankedOut] = Field(description="Too little volume to rank (reason), by place name.")
    most_improved: list[RankedOut]
    most_worsened: list[RankedOut]


class IndexDefinitionOut(BaseModel):
    name: str
    title: str
    components: list[dict[str, Any]]
    bands: list[dict[str, Any]]


class DefinitionsAnswer(BaseModel):
    method_version: str
    time_zone: str
    indices: list[IndexDefinitionOut]
    ranking: dict[str, Any]
    reports: dict[str, Any]


def _period(kind: PeriodKind, key: str) -> Period:
    try:
        return parse_period(kind, key)
    except InvalidPeriod as exc:
        raise invalid("period_key", str(exc), location="path") from exc


def _figures(service: IndexService, index: str, period: Period, level: str) -> IndexFigures:
    if index not in service.settings.definitions:
        raise ProblemError(NOT_FOUND, f"no index named {index!r}; defined: "
                           f"{', '.join(sorted(service.settings.definitions))}")
    return service.figures(period, (level,), (index,))[index]


@indices_router.get("", response_model=DefinitionsAnswer, summary="The indices, their components and method")
def list_indices(service: IndicesDep) -> dict[str, Any]:
    settings = service.settings
    return {"method_version": settings.method_version, "time_zone": service.time_zone,
            "indices": [{"name": name, "title": d.title,
                         "components": [c.model_dump(mode="json") for c in d.components],
                         "bands": [b.model_dump(mode="json") for b in d.bands]}
                        for name, d in settings.definitions.items()],
            "ranking": settings.ranking.model_dump(mode="json"),
            "reports": settings.reports.model_dump(mode="json")}


@indices_router.get("/{index}/{period_kind}/{period_key}", response_model=IndexAnswer, responses=NO_INDEX,
                    summary="An index of a period for every place of a level, with its components")
def get_index(service: IndicesDep, index: IndexName, period_kind: KindParam, period_key: KeyParam,
              level: LevelParam = "district") -> dict[str, Any]:
    """Computed from the data stored now (a running period: so far); published figures: /v1/reports."""
    period = _period(period_kind, period_key)
    figures = _figures(service, index, period, level)
    return {"index": index, "title": figures.definition.title, "period": period.as_json(), "level": level,
            "time_zone": service.time_zone, "method_version": service.method_version,
            "places": figures.level_json(level)}


@rankings_router.get("/{index}/{period_kind}/{period_key}", response_model=RankingAnswer, responses=NO_INDEX,
                     summary="Places ranked by an index, with the change against the previous period")
def get_ranking(service: IndicesDep, index: IndexName, period_kind: KindParam, period_key: KeyParam,
                level: RankedLevelParam = "district") -> dict[str, Any]:
    period = _period(period_kind, period_key)
    ranking = _figures(service, index, period, level).rankings[level]
    return {"index": index, "period": period.as_json(), "previous_period": period.previous().as_json(),
            "level": level, "method_version": service.method_version,
            "min_coverage": service.settings.ranking.min_coverage, **ranking.as_json()}


# Reports

class ReportSummaryOut(BaseModel):
    report_id: str
    period_kind: str
    period_key: str
    first_day: str
    published_ms: int = Field(description="When it was frozen, epoch milliseconds UTC.")
    method_version: str
    links: dict[str, str] = Field(description="json, csv and html (the printable page).")


class ReportList(BaseModel):
    items: list[ReportSummaryOut] = Field(description="The newest periods first.")


class ReportOut(BaseModel):
    report_id: str
    period: PeriodOut
    time_zone: str
    method_version: str
    published_ms: int
    published_by: str = Field(description="schedule or request.")
    indices: dict[str, Any] = Field(description="Per index: title, components, bands, the places of every "
                                    "level (as GET /v1/indices answers them) and the rankings.")
    denominators: dict[str, dict[str, dict[str, float]]] = Field(
        description="Level -> place -> figure -> the sum the report was computed from.")
    late_data_for_previous: dict[str, Any] | None = Field(
        description="What arrived for the previous period after its report: per figure published, now, "
        "late and late_share, and places_changed per level; null if it was not published.")


class PublishIn(StrictModel):
    period_kind: PeriodKind
    period_key: str = Field(description="e.g. 2026-11 for a month.")


NO_REPORT: dict[int | str, dict[str, Any]] = {404: problem_response_doc("No report for that period")}


def _links(report_id: str) -> dict[str, str]:
    return {"json": f"/v1/reports/{report_id}", "csv": f"/v1/reports/{report_id}.csv",
            "html": f"/v1/reports/{report_id}.html"}


def _reports(service: IndexService) -> Any:
    if service.reports is None:
        raise ProblemError(UNAVAILABLE, "this instance keeps no reports")
    return service.reports


def _report(service: IndexService, report_id: str) -> dict[str, Any]:
    found: dict[str, Any] | None = _reports(service).get(report_id)
    if found is None:
        raise ProblemError(NOT_FOUND, f"no report {report_id!r} has been published")
    return found


@reports_router.get("", response_model=ReportList, dependencies=READ, summary="Published reports")
def list_reports(service: IndicesDep,
                 period_kind: Annotated[PeriodKind | None, Query(description="Only this kind.")] = None,
                 limit: Annotated[int, Query(ge=1, le=1000, description="Most reports returned.")] = 100,
                 ) -> dict[str, Any]:
    items = _reports(service).list(period_kind.value if period_kind else None, limit)
    return {"items": [{**item.as_json(), "links": _links(item.report_id)} for item in items]}


@reports_router.post("", response_model=ReportOut, status_code=201, dependencies=[
    Depends(require(Scope.REPORTS_WRITE))], summary="Publish the report of a period that has ended",
    responses={200: {"description": "Published before: the frozen report", "model": ReportOut},
               409: problem_response_doc("The period has not ended (`period-not-ended`)"),
               422: problem_response_doc("A period key that names no period of its kind")})
def publish_report(body: PublishIn, service: IndicesDep) -> Any:
    """Computes and freezes the report now; a report published before is answered as it is (200)."""
    try:
        period = parse_period(body.period_kind, body.period_key)
    except InvalidPeriod as exc:
        raise invalid("period_key", str(exc), location="body") from exc
    _reports(service)
    try:
        published = service.publish(period, "request")
    except PeriodNotEnded as exc:
        raise ProblemError(PERIOD_NOT_ENDED, str(exc)) from exc
    return JSONResponse(published.content, status_code=201 if published.created else 200)


# The .csv and .html routes come first: the plain route's id would match "month-2026-11.csv" too.
@reports_router.get("/{report_id}.csv", response_class=Response, dependencies=READ, responses={
    **NO_REPORT, 200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
    summary="A report as CSV, one row per index, level and place")
def report_csv(service: IndicesDep, report_id: ReportId) -> Response:
    buffer = io.StringIO()
    write_report_csv(_report(service, report_id), buffer)
    return Response(buffer.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{report_id}.csv"'})


@reports_router.get("/{report_id}.html", response_class=HTMLResponse, dependencies=READ, responses={
    **NO_REPORT, 200: {"content": {"text/html": {"schema": {"type": "string"}}}}},
    summary="A report as a printable page")
def report_html(service: IndicesDep, report_id: ReportId) -> HTMLResponse:
    return HTMLResponse(render_report(_report(service, report_id)))


@reports_router.get("/{report_id}", response_model=ReportOut, dependencies=READ, responses=NO_REPORT,
                    summary="A published report, frozen")
def get_report(service: IndicesDep, report_id: ReportId) -> Any:
    split_report_id(report_id)  # the pattern has checked it names a kind
    return JSONResponse(_report(service, report_id))
