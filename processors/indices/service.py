"""Indices, rankings and reports of a period from what the stores hold now (docs/indices.md).

The denominators come from the exposure totals the rules count (`Store.exposure_sums`, per intersection,
grid, district and city) and, when the case loop runs, from the case store's evaluation of the period
(processors/cases/evaluation.py: cases registered, due, closed, closed on time and reworked, per grid,
district and city). A report is computed once and frozen in the report store under its period's id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.index_settings import IndexSettings, PeriodKind
from processors.cases.evaluation import evaluate
from processors.indices.figures import IndexFigures, LevelDenominators, compute, late_data
from processors.indices.method import CASE_FIGURES, CITY, LEVELS, figures_of
from processors.indices.periods import Period, local_day, period_of
from processors.indices.report import build_report, report_id
from store.base import ExposureQuery, Store

if TYPE_CHECKING:
    from store.cases import CaseStore
    from store.reports import ReportStore

log = logging.getLogger(__name__)
HOUR_MS = 3_600_000
# Evaluation groups -> index levels (cases are not kept per intersection).
_CASE_LEVELS = ("grid", "district", "city")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class PeriodNotEnded(Exception):
    """A report was asked for a period that has not ended yet."""


class ReportsUnavailable(Exception):
    """This instance keeps no reports."""


@dataclass(frozen=True)
class Published:
    content: dict[str, Any]
    created: bool  # False: it had been published before (by this or another replica)


class IndexService:
    def __init__(self, settings: IndexSettings, time_zone: str, store: Store, *,
                 reports: ReportStore | None = None, cases: CaseStore | None = None,
                 now_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.settings = settings
        self.time_zone = time_zone
        self.store = store
        self.reports = reports
        self.cases = cases
        self.now_ms = now_ms
        self._counters = {index: tuple(sorted({name for component in definition.components
                                               if component.case_rate is None
                                               for name in figures_of(component)}))
                          for index, definition in settings.definitions.items()}

    @property
    def method_version(self) -> str:
        return self.settings.method_version

    def period_of_now(self, kind: PeriodKind) -> Period:
        return period_of(kind, local_day(self.now_ms(), self.time_zone))

    def denominators(self, period: Period, levels: tuple[str, ...] = LEVELS,
                     indices: tuple[str, ...] | None = None) -> dict[str, dict[str, dict[str, float]]]:
        """Level -> place -> figure -> its sum over the period, as stored now (the figures of `indices`:
        default all)."""
        names = tuple(self.settings.definitions) if indices is None else indices
        counters = tuple(sorted({counter for name in names for counter in self._counters[name]}))
        uses_cases = any(component.case_rate is not None for name in names
                         for component in self.settings.definitions[name].components)
        found: dict[str, dict[str, dict[str, float]]] = {level: {} for level in levels}
        for level in levels:
            if not counters:
                break
            query = ExposureQuery(first_day=period.first_day, last_day=period.last_day, group_by=level,
                                  counters=counters)
            for item in self.store.exposure_sums(query):
                place = CITY if level == "city" else item.place
                found[level].setdefault(place, {})[item.counter] = item.value
        if self.cases is not None and uses_cases and any(level in levels for level in _CASE_LEVELS):
            self._add_cases(period, found)
        return found

    def _add_cases(self, period: Period, found: dict[str, dict[str, dict[str, float]]]) -> None:
        assert self.cases is not None
        now = self.now_ms()
        start = period.start_ms(self.time_zone)
        # A period still running is evaluated as of now: nothing is due in its future.
        end = min(period.end_ms(self.time_zone), max(now, start + 1))
        evaluation = evaluate(self.cases.evaluation_columns(start, end, now), start, end)
        for level in _CASE_LEVELS:
            if level not in found:
                continue
            groups = {CITY: evaluation.city} if level == "city" else getattr(evaluation, level)
            for place, figures in groups.items():
                if place == "":  # a case without a grid or district counts only in the city
                    continue
                values = {"cases_registered": figures.registered, "cases_due": figures.due,
                          "cases_closed": figures.closed, "cases_on_time": figures.on_time,
                          "cases_reworked": figures.reworked}
                found[level].setdefault(place, {}).update(
                    {name: float(values[name]) for name in CASE_FIGURES})

    def figures(self, period: Period, levels: tuple[str, ...] = LEVELS,
                indices: tuple[str, ...] | None = None) -> dict[str, IndexFigures]:
        """Every index of `indices` (default: all) at `levels`, with the previous period's for the ranks."""
        return compute(self.settings, period, self.denominators(period, levels, indices),
                       self.denominators(period.previous(), levels, indices), levels, indices)

    # Reports

    def _report_store(self) -> ReportStore:
        if self.reports is None:
            raise ReportsUnavailable("this instance keeps no reports")
        return self.reports

    def publish(self, period: Period, published_by: str) -> Published:
        """The period's report: computed and frozen now, or as published before."""
        reports = self._report_store()
        identifier = report_id(period)
        stored = reports.get(identifier)
        if stored is not None:
            return Published(stored, created=False)
        now = self.now_ms()
        if period.end_ms(self.time_zone) > now:
            raise PeriodNotEnded(f"{period.kind.value} {period.key} ends at local midnight after "
                                 f"{period.last_day}; its report can be published after that")
        current: LevelDenominators = self.denominators(period)
        previous_period = period.previous()
        previous = self.denominators(previous_period)
        late = None
        frozen = reports.get(report_id(previous_period))
        if frozen is not None:
            late = {"report_id": frozen["report_id"], "published_ms": frozen["published_ms"],
                    **late_data(frozen["denominators"], previous)}
        content = build_report(self.settings, period, self.time_zone,
                               compute(self.settings, period, current, previous), current,
                               published_ms=now, published_by=published_by, late=late)
        created = reports.publish(content)
        if not created:  # another replica was first: its report is the one
            stored = reports.get(identifier)
            assert stored is not None
            return Published(stored, created=False)
        log.info("indices: published report %s (method %s)", identifier, content["method_version"])
        return Published(content, created=True)

    def due(self) -> list[Period]:
        """For each scheduled kind, the latest period whose end plus the allowed lateness has passed."""
        settings = self.settings.reports
        cutoff = self.now_ms() - int(settings.allowed_lateness_h * HOUR_MS)
        return [period_of(kind, local_day(cutoff, self.time_zone)).previous() for kind in settings.periods]

    def publish_due(self) -> list[str]:
        """Publishes the reports due and not yet published; their ids."""
        reports = self._report_store()
        published = []
        for period in self.due():
            if not reports.exists(report_id(period)) and self.publish(period, "schedule").created:
                published.append(report_id(period))
        return published
