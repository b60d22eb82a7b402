"""The index of one place over one period, from the denominators counted there (docs/indices.md, "Method").

Each component is a rate, numerator / denominator: an exposure rate (`breaking` / `observed`, counted by the
rules: core/exposures.py) or a rate of the case loop (closed, on time or reworked / due, as in
docs/cases.md). It scores 100 × clamp((worst − rate) / (worst − best), 0, 1) when its denominator reaches
`min_volume_per_day` × the period's days, else it is shown unscored. The index is the weighted mean of the
scored components, its `coverage` the share of the weight they carry; scores are published with two
decimals and their grade is the first band whose `min_score` they reach.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from core.index_settings import ComponentSettings, IndexDefinition

# The places an index is computed for, from the finest; cases are known per grid and district, not per
# intersection (a case component is absent there).
LEVELS: Final = ("intersection", "grid", "district", "city")
CITY: Final = "city"
# Case figures kept with the exposure counters of a place (store/reports.py freezes both).
CASE_FIGURES: Final = ("cases_registered", "cases_due", "cases_closed", "cases_on_time", "cases_reworked")
# case_rate -> (numerator, denominator) among CASE_FIGURES.
CASE_RATES: Final = {"closure_rate": ("cases_closed", "cases_due"),
                     "on_time_rate": ("cases_on_time", "cases_due"),
                     "rework_rate": ("cases_reworked", "cases_due")}
SCORE_DECIMALS: Final = 2

# Place -> figure name (an exposure counter or one of CASE_FIGURES) -> its sum over the period.
Denominators = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class ComponentResult:
    name: str
    weight: float
    numerator: float
    denominator: float
    rate: float | None  # None: nothing counted
    min_volume: float  # the denominator it needs in this period to be scored
    score: float | None  # None: not scored (no denominator, or below min_volume)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "numerator": self.numerator,
                "denominator": self.denominator, "rate": self.rate, "min_volume": self.min_volume,
                "scored": self.score is not None,
                "score": None if self.score is None else round(self.score, SCORE_DECIMALS)}


@dataclass(frozen=True)
class PlaceIndex:
    place: str
    score: float | None  # rounded to SCORE_DECIMALS; None: no component scored
    grade: str | None
    coverage: float  # share of the index's weight scored here, 0..1
    components: tuple[ComponentResult, ...]

    def as_json(self) -> dict[str, Any]:
        return {"place": self.place, "score": self.score, "grade": self.grade,
                "coverage": round(self.coverage, 4),
                "components": [component.as_json() for component in self.components]}


def figures_of(component: ComponentSettings) -> tuple[str, str]:
    """(numerator, denominator) figure names of a component."""
    if component.case_rate is not None:
        return CASE_RATES[component.case_rate]
    assert component.breaking is not None and component.observed is not None  # settings validated
    return component.breaking, component.observed


def component_score(component: ComponentSettings, rate: float) -> float:
    span = component.worst_rate - component.best_rate
    return 100.0 * min(max((component.worst_rate - rate) / span, 0.0), 1.0)


def grade_of(definition: IndexDefinition, score: float) -> str:
    for band in definition.bands:
        if score >= band.min_score:
            return band.grade
    return definition.bands[-1].grade  # unreachable: the last band starts at 0


def place_index(definition: IndexDefinition, place: str, figures: Mapping[str, float],
                days: int) -> PlaceIndex:
    results = []
    for component in definition.components:
        numerator_name, denominator_name = figures_of(component)
        numerator = float(figures.get(numerator_name, 0.0))
        denominator = float(figures.get(denominator_name, 0.0))
        rate = numerator / denominator if denominator > 0 else None
        min_volume = component.min_volume_per_day * days
        scored = rate is not None and denominator >= min_volume
        results.append(ComponentResult(
            name=component.name, weight=component.weight, numerator=numerator, denominator=denominator,
            rate=rate, min_volume=min_volume,
            score=component_score(component, rate) if scored and rate is not None else None))
    total_weight = sum(result.weight for result in results)
    scored_weight = sum(result.weight for result in results if result.score is not None)
    if scored_weight == 0:
        return PlaceIndex(place, None, None, 0.0, tuple(results))
    weighted = sum(result.weight * result.score for result in results if result.score is not None)
    score = round(weighted / scored_weight, SCORE_DECIMALS)
    return PlaceIndex(place, score, grade_of(definition, score), scored_weight / total_weight, tuple(results))


def level_indices(definition: IndexDefinition, denominators: Denominators,
                  days: int) -> dict[str, PlaceIndex]:
    """The index of every place that counted anything, by place name."""
    return {place: place_index(definition, place, figures, days)
            for place, figures in sorted(denominators.items())}
