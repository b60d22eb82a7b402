"""Places ranked by their index, with the change against the previous period (docs/indices.md, "Rankings").

A place is ranked when it has a score and the components scored there carry at least `min_coverage` of the
index's weight: a place whose volume is too small to score its components is listed unranked, never first
or last. Equal scores share a rank (1, 2, 2, 4). The change is the score minus the previous period's score;
the most improved and most worsened are chosen among the places ranked in both periods.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processors.indices.method import SCORE_DECIMALS, PlaceIndex


@dataclass(frozen=True)
class RankedPlace:
    place: str
    rank: int | None  # None: unranked, for `reason`
    score: float | None
    coverage: float
    previous_score: float | None
    score_change: float | None
    previous_rank: int | None
    rank_change: int | None  # previous rank − rank: positive moved up
    reason: str | None = None  # "no_score" or "low_coverage" when unranked

    def as_json(self) -> dict[str, Any]:
        return {"place": self.place, "rank": self.rank, "score": self.score,
                "coverage": round(self.coverage, 4), "previous_score": self.previous_score,
                "score_change": self.score_change, "previous_rank": self.previous_rank,
                "rank_change": self.rank_change, "reason": self.reason}


@dataclass(frozen=True)
class Ranking:
    ranked: tuple[RankedPlace, ...]
    unranked: tuple[RankedPlace, ...]
    most_improved: tuple[RankedPlace, ...]
    most_worsened: tuple[RankedPlace, ...]

    def as_json(self) -> dict[str, Any]:
        return {"ranked": [p.as_json() for p in self.ranked],
                "unranked": [p.as_json() for p in self.unranked],
                "most_improved": [p.as_json() for p in self.most_improved],
                "most_worsened": [p.as_json() for p in self.most_worsened]}

    def by_place(self) -> dict[str, RankedPlace]:
        return {p.place: p for p in (*self.ranked, *self.unranked)}


def _unranked_reason(index: PlaceIndex, min_coverage: float) -> str | None:
    if index.score is None:
        return "no_score"
    if index.coverage < min_coverage:
        return "low_coverage"
    return None


def ranks(indices: Mapping[str, PlaceIndex], min_coverage: float) -> dict[str, int]:
    """Competition ranks of the places eligible for ranking: 1 + how many eligible places score higher."""
    scores = {place: index.score for place, index in indices.items()
              if index.score is not None and _unranked_reason(index, min_coverage) is None}
    ordered = sorted(scores.values(), reverse=True)
    first_at: dict[float, int] = {}
    for position, score in enumerate(ordered, start=1):
        first_at.setdefault(score, position)
    return {place: first_at[score] for place, score in scores.items()}


def rank(current: Mapping[str, PlaceIndex], previous: Mapping[str, PlaceIndex], min_coverage: float,
         movers: int) -> Ranking:
    now, before = ranks(current, min_coverage), ranks(previous, min_coverage)
    places = []
    for place, index in current.items():
        earlier = previous.get(place)
        previous_score = earlier.score if earlier is not None else None
        change = (round(index.score - previous_score, SCORE_DECIMALS)
                  if index.score is not None and previous_score is not None else None)
        rank_now, rank_before = now.get(place), before.get(place)
        places.append(RankedPlace(
            place=place, rank=rank_now, score=index.score, coverage=index.coverage,
            previous_score=previous_score, score_change=change, previous_rank=rank_before,
            rank_change=rank_before - rank_now if rank_now is not None and rank_before is not None else None,
            reason=_unranked_reason(index, min_coverage)))
    ranked = sorted((p for p in places if p.rank is not None), key=lambda p: (p.rank, p.place))
    unranked = sorted((p for p in places if p.rank is None), key=lambda p: p.place)
    both = [p for p in ranked if p.previous_rank is not None and p.score_change is not None]
    improved = sorted((p for p in both if p.score_change is not None and p.score_change > 0),
                      key=lambda p: (-(p.score_change or 0), p.place))[:movers]
    worsened = sorted((p for p in both if p.score_change is not None and p.score_change < 0),
                      key=lambda p: (p.score_change or 0, p.place))[:movers]
    return Ranking(tuple(ranked), tuple(unranked), tuple(improved), tuple(worsened))
