"""Settings of the civility indices (docs/indices.md): each index's components, weights and grade bands, the
ranking rules and when reports are published.

Kept apart from core/settings.py so that file gains one `indices:` section. Validated at load: weights are
positive, bands run from the best grade down to a band starting at 0, and an exposure counter the rules do
not count is refused with its name (the list is core/exposures.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.exposures import COUNTERS

# The version of the formulas in processors/indices/ (docs/indices.md). Raised whenever a formula changes;
# the configured components, weights, bands and ranking rules are added to it as a digest (method_version).
METHOD: Final = "citywatch-indices-1"

CaseRate = Literal["closure_rate", "on_time_rate", "rework_rate"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PeriodKind(StrEnum):
    DAY = "day"
    WEEK = "week"  # Monday to Sunday
    MONTH = "month"
    QUARTER = "quarter"
    HALF = "half"  # a calendar half-year


class ComponentSettings(_Section):
    """One rate of an index and how it is scored: 100 at `best_rate`, 0 at `worst_rate`, linear between."""

    name: str = Field(min_length=1, description="Shown next to the score, e.g. red_light.")
    weight: float = Field(gt=0, description="Its share of the index: weight / sum of the weights scored.")
    observed: str | None = Field(None, description="Exposure counter of the population judged (the "
                                 "denominator), e.g. stop_line_crossings (core/exposures.py).")
    breaking: str | None = Field(None, description="Exposure counter of the part that broke the rule (the "
                                 "numerator), e.g. red_light_crossings.")
    case_rate: CaseRate | None = Field(None, description="Or a rate of the case loop (docs/cases.md, "
                                       "Evaluation): closure_rate, on_time_rate or rework_rate.")
    best_rate: float = Field(ge=0, le=1, description="The rate that scores 100 (or better).")
    worst_rate: float = Field(ge=0, le=1, description="The rate that scores 0 (or worse).")
    min_volume_per_day: float = Field(
        0, ge=0, description="The component is scored at a place only when its denominator (vehicles, "
        "minutes or due cases) reaches this many per day of the period; below, its rate is shown unscored.")

    @model_validator(mode="after")
    def _one_source(self) -> ComponentSettings:
        exposure = self.observed is not None or self.breaking is not None
        if exposure == (self.case_rate is not None):
            raise ValueError(f"component {self.name!r} needs either observed and breaking counters or a "
                             "case_rate, not both")
        if exposure and (self.observed is None or self.breaking is None):
            raise ValueError(f"component {self.name!r} needs both observed and breaking counters")
        unknown = sorted(c for c in (self.observed, self.breaking) if c is not None and c not in COUNTERS)
        if unknown:
            raise ValueError(f"component {self.name!r}: unknown exposure counter(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(COUNTERS))}")
        if self.best_rate == self.worst_rate:
            raise ValueError(f"component {self.name!r}: best_rate and worst_rate must differ")
        return self


class BandSettings(_Section):
    grade: str = Field(min_length=1, description="The grade's name, e.g. excellent (优秀).")
    min_score: float = Field(ge=0, le=100, description="Scores from this (included) up to the next band.")


DEFAULT_BANDS: Final = (
    BandSettings(grade="excellent", min_score=90), BandSettings(grade="good", min_score=80),
    BandSettings(grade="pass", min_score=60), BandSettings(grade="fail", min_score=0))


class IndexDefinition(_Section):
    title: str = Field(min_length=1, description="The index's name in reports.")
    components: list[ComponentSettings] = Field(min_length=1)
    bands: list[BandSettings] = Field(default_factory=lambda: list(DEFAULT_BANDS), description="Grades "
                                      "from the best down; the last starts at 0.")

    @model_validator(mode="after")
    def _consistent(self) -> IndexDefinition:
        names = [component.name for component in self.components]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"component names repeat: {', '.join(repeated)}")
        scores = [band.min_score for band in self.bands]
        if not scores or any(a <= b for a, b in itertools.pairwise(scores)) or scores[-1] != 0:
            raise ValueError(f"bands must be ordered from the highest min_score down, each lower than the "
                             f"one before, the last at 0; got {scores}")
        return self


def _exposure(name: str, observed: str, breaking: str, weight: float, worst: float,
              min_per_day: float) -> ComponentSettings:
    return ComponentSettings(name=name, weight=weight, observed=observed, breaking=breaking, best_rate=0,
                             worst_rate=worst, min_volume_per_day=min_per_day)


def _default_definitions() -> dict[str, IndexDefinition]:
    """The defaults of docs/indices.md ("Defaults"): this project's choices, with the reasons given there."""
    return {
        "traffic": IndexDefinition(title="Traffic civility index", components=[
            _exposure("red_light", "stop_line_crossings", "red_light_crossings", 30, 0.02, 1000),
            _exposure("yield_crosswalk", "crosswalk_encounters", "crosswalk_not_yielded", 25, 0.20, 200),
            _exposure("no_helmet", "riders_observed", "riders_without_helmet", 20, 0.30, 200),
            _exposure("speeding", "vehicles_measured", "vehicles_speeding", 15, 0.10, 1000),
            _exposure("illegal_parking", "parking_occupied_minutes", "parking_illegal_minutes", 10, 0.30,
                      600),
        ]),
        "sanitation": IndexDefinition(title="Environmental sanitation index", components=[
            _exposure("bin_overflow", "bin_minutes", "bin_overflow_minutes", 30, 0.10, 1440),
            _exposure("toilet_odour", "odour_sensor_minutes", "odour_out_of_standard_minutes", 15, 0.10,
                      1440),
            ComponentSettings(name="case_closure", weight=25, case_rate="closure_rate", best_rate=1,
                              worst_rate=0.6, min_volume_per_day=0.2),
            ComponentSettings(name="case_on_time", weight=20, case_rate="on_time_rate", best_rate=1,
                              worst_rate=0.5, min_volume_per_day=0.2),
            ComponentSettings(name="case_rework", weight=10, case_rate="rework_rate", best_rate=0,
                              worst_rate=0.3, min_volume_per_day=0.2),
        ]),
    }


class RankingSettings(_Section):
    min_coverage: float = Field(
        0.5, gt=0, le=1, description="A place is ranked only when the components scored there (with enough "
        "volume) carry at least this share of the index's weight.")
    movers: int = Field(3, ge=0, description="How many most improved and most worsened places are named.")


class ReportSettings(_Section):
    periods: list[PeriodKind] = Field(
        default_factory=lambda: [PeriodKind.MONTH, PeriodKind.QUARTER, PeriodKind.HALF],
        description="The periods published automatically once they have ended.")
    allowed_lateness_h: float = Field(
        72, ge=0, description="Hours after a period's end before its report is published: data arriving "
        "later is counted in the next report's late-data statement.")
    check_interval_s: float = Field(300, gt=0, description="How often the api role looks for a report due.")
    auto_publish: bool = Field(True, description="Publish reports on schedule (false: only on request).")


class IndexSettings(_Section):
    definitions: dict[str, IndexDefinition] = Field(
        default_factory=_default_definitions, description="The indices by name (replaces the defaults).")
    ranking: RankingSettings = RankingSettings()
    reports: ReportSettings = ReportSettings()

    @field_validator("definitions")
    @classmethod
    def _named(cls, value: dict[str, IndexDefinition]) -> dict[str, IndexDefinition]:
        if not value:
            raise ValueError("at least one index is defined")
        bad = sorted(name for name in value if not name.replace("_", "").isalnum() or not name.isascii())
        if bad:
            raise ValueError(f"index names are letters, digits and _: {', '.join(bad)}")
        return value

    @property
    def method_version(self) -> str:
        """METHOD plus a digest of everything that changes a figure: a report says what computed it."""
        method = {"definitions": {name: definition.model_dump(mode="json")
                                  for name, definition in sorted(self.definitions.items())},
                  "ranking": self.ranking.model_dump(mode="json")}
        digest = hashlib.sha256(json.dumps(method, sort_keys=True).encode()).hexdigest()[:10]
        return f"{METHOD}+{digest}"
