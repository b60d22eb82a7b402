"""A published report: the figures of every index of one period, frozen with the denominators they were
computed from and the method version (docs/indices.md, "Reports"); as JSON and as CSV rows."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from typing import IO, Any, Final

from core.index_settings import IndexSettings, PeriodKind
from processors.indices.figures import IndexFigures, LevelDenominators
from processors.indices.method import LEVELS
from processors.indices.periods import Period

# A report's id names its period: one report per period, whoever publishes it first.
REPORT_ID_FORM: Final = (r"^(day|week|month|quarter|half)-[0-9]{4}"
                         r"(-[0-9]{2}(-[0-9]{2})?|-W[0-9]{2}|-Q[1-4]|-H[12])$")


def report_id(period: Period) -> str:
    return f"{period.kind.value}-{period.key}"


def split_report_id(value: str) -> tuple[PeriodKind, str]:
    """'month-2026-11' -> (month, '2026-11'); ValueError when it names no period kind."""
    kind, _, key = value.partition("-")
    return PeriodKind(kind), key


def build_report(settings: IndexSettings, period: Period, time_zone: str, figures: Mapping[str, IndexFigures],
                 denominators: LevelDenominators, *, published_ms: int, published_by: str,
                 late: dict[str, Any] | None) -> dict[str, Any]:
    """The report's whole content; `late`: the late-data statement about the previous period's report."""
    return {
        "report_id": report_id(period),
        "period": period.as_json(),
        "time_zone": time_zone,
        "method_version": settings.method_version,
        "published_ms": published_ms,
        "published_by": published_by,
        "indices": {
            name: {
                "title": index.definition.title,
                "components": [c.model_dump(mode="json") for c in index.definition.components],
                "bands": [b.model_dump(mode="json") for b in index.definition.bands],
                "levels": {level: index.level_json(level) for level in index.levels},
                "rankings": {level: ranking.as_json() for level, ranking in index.rankings.items()},
            }
            for name, index in figures.items()
        },
        "denominators": {level: {place: dict(values) for place, values in denominators.get(level, {}).items()}
                         for level in LEVELS},
        "late_data_for_previous": late,
    }


CSV_COLUMNS: Final = ("index", "level", "place", "score", "grade", "coverage", "rank", "previous_score",
                      "score_change", "previous_rank", "rank_change", "unranked_reason")


def write_report_csv(report: Mapping[str, Any], out: IO[str]) -> None:
    """One row per index, level and place; each component's rate, numerator, denominator and score as
    `<component>_<figure>` columns after the fixed ones. An empty cell where the JSON has null."""
    component_columns = []
    for index in report["indices"].values():
        for component in index["components"]:
            for figure in ("rate", "numerator", "denominator", "score"):
                column = f"{component['name']}_{figure}"
                if column not in component_columns:
                    component_columns.append(column)
    writer = csv.DictWriter(out, fieldnames=[*CSV_COLUMNS, *component_columns], lineterminator="\n")
    writer.writeheader()
    for name, index in report["indices"].items():
        for level in LEVELS:
            for row in index["levels"].get(level, []):
                flat: dict[str, Any] = {"index": name, "level": level, "place": row["place"]}
                flat.update({column: row.get(column) for column in CSV_COLUMNS[3:]})
                for component in row["components"]:
                    for figure in ("rate", "numerator", "denominator", "score"):
                        flat[f"{component['name']}_{figure}"] = component[figure]
                writer.writerow({key: "" if value is None else value for key, value in flat.items()})
