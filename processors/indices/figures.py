"""Every index of a period at every level, with its rankings, from the denominators of the period and of the
one before (docs/indices.md); and the late-data statement that compares a published report's frozen
denominators with today's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from core.index_settings import IndexDefinition, IndexSettings
from processors.indices.method import CITY, LEVELS, Denominators, PlaceIndex, level_indices
from processors.indices.periods import Period
from processors.indices.ranking import Ranking, rank

# Levels ranked: the city is a single place.
RANKED_LEVELS: Final = ("intersection", "grid", "district")

# Level -> place -> figure -> sum over the period.
LevelDenominators = Mapping[str, Denominators]


@dataclass(frozen=True)
class IndexFigures:
    name: str
    definition: IndexDefinition
    levels: dict[str, dict[str, PlaceIndex]]
    rankings: dict[str, Ranking]

    def level_json(self, level: str) -> list[dict[str, Any]]:
        """The places of a level with their scores, components and ranks, by place name."""
        ranked = self.rankings[level].by_place() if level in self.rankings else {}
        rows = []
        for place, index in self.levels[level].items():
            row = index.as_json()
            standing = ranked.get(place)
            if standing is not None:
                row.update(rank=standing.rank, previous_score=standing.previous_score,
                           score_change=standing.score_change, previous_rank=standing.previous_rank,
                           rank_change=standing.rank_change, unranked_reason=standing.reason)
            rows.append(row)
        return rows


def compute(settings: IndexSettings, period: Period, current: LevelDenominators,
            previous: LevelDenominators, levels: tuple[str, ...] = LEVELS,
            indices: tuple[str, ...] | None = None) -> dict[str, IndexFigures]:
    """The indices of `period` (and of the period before, for the changes) at `levels`; only `indices`
    when given."""
    found = {}
    days, previous_days = period.days, period.previous().days
    for name, definition in settings.definitions.items():
        if indices is not None and name not in indices:
            continue
        now = {level: level_indices(definition, current.get(level, {}), days) for level in levels}
        rankings: dict[str, Ranking] = {}
        for level in RANKED_LEVELS:
            if level in levels:
                before = level_indices(definition, previous.get(level, {}), previous_days)
                rankings[level] = rank(now[level], before, settings.ranking.min_coverage,
                                       settings.ranking.movers)
        found[name] = IndexFigures(name, definition, now, rankings)
    return found


def late_data(frozen: LevelDenominators, now: LevelDenominators) -> dict[str, Any]:
    """What arrived for a period after its report froze: per figure, the city's sum as published and now,
    and how many places changed at each level."""
    city_then = frozen.get("city", {}).get(CITY, {})
    city_now = now.get("city", {}).get(CITY, {})
    figures = {}
    for figure in sorted(set(city_then) | set(city_now)):
        published, today = float(city_then.get(figure, 0.0)), float(city_now.get(figure, 0.0))
        figures[figure] = {"published": published, "now": today, "late": today - published,
                           "late_share": (today - published) / published if published else None}
    changed = {}
    for level in LEVELS[:-1]:
        then_level, now_level = frozen.get(level, {}), now.get(level, {})
        changed[level] = sum(1 for place in set(then_level) | set(now_level)
                             if dict(then_level.get(place, {})) != dict(now_level.get(place, {})))
    return {"figures": figures, "places_changed": changed,
            "any": any(entry["late"] != 0 for entry in figures.values()) or any(changed.values())}
