"""Indices and rankings of a generated month over several districts, each figure checked against a
computation written here from the formulas of docs/indices.md (sums per place, rates, component scores,
the weighted mean over the components with enough volume, grades, competition ranks, the change against
the previous month), not from the code's helpers. The stores are real (SQLite)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from core.index_settings import IndexSettings, PeriodKind
from core.settings import RelationalSettings
from processors.indices.periods import parse_period
from processors.indices.service import IndexService
from store.cases import CaseStore
from store.sqlite_store import SqliteStore
from tests.support.indices import TIME_ZONE, City, generate, local_ms
from tests.support.stores import KEEP_ALL

NOVEMBER = ("2026-11-01", "2026-11-30", 30)
OCTOBER = ("2026-10-01", "2026-10-31", 31)
# Case figures per docs/cases.md, for the components that use them.
CASE_RATE_FIGURES = {"closure_rate": ("closed", "due"), "on_time_rate": ("on_time", "due"),
                     "rework_rate": ("reworked", "due")}


@pytest.fixture(scope="module")
def city() -> City:
    return generate(date(2026, 10, 1), date(2026, 11, 30))


@pytest.fixture(scope="module")
def service(city: City, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexService]:
    directory = tmp_path_factory.mktemp("indices")
    store = SqliteStore.in_directory(directory / "data", KEEP_ALL)
    store.write_exposures(city.exposure_totals())
    store.flush()
    cases = CaseStore.open(RelationalSettings(), directory)
    with cases.transaction() as tx:
        for case in city.cases:
            tx.insert(case, [])
    yield IndexService(IndexSettings(), TIME_ZONE, store, cases=cases,
                       now_ms=lambda: local_ms(date(2026, 12, 10)))
    store.close()
    cases.close()


# The expected figures, from docs/indices.md


def place_sums(city: City, level: str, first: str, last: str) -> dict[str, dict[str, float]]:
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for (day, device, counter), value in city.totals.items():
        if first <= day <= last:
            place = "city" if level == "city" else city.tags[device].get(level)
            if place is not None:
                sums[place][counter] += value
    return sums


def case_figures(city: City, level: str, first: str, last: str) -> dict[str, dict[str, int]]:
    start = local_ms(date.fromisoformat(first))
    end = local_ms(date.fromordinal(date.fromisoformat(last).toordinal() + 1))
    found: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    if level == "intersection":
        return found
    for case in city.cases:
        if not start <= case.created_time_ms < end:
            continue
        place = "city" if level == "city" else getattr(case, level)
        closed = case.closed_time_ms is not None and case.closed_time_ms < end
        due = closed or (case.deadline_ms is not None and case.deadline_ms < end)
        figures = found[place]
        figures["due"] += due
        figures["closed"] += closed
        figures["on_time"] += closed and case.closed_time_ms <= case.deadline_ms  # type: ignore[operator]
        figures["reworked"] += due and case.reworked > 0
    return found


def expected_index(settings: IndexSettings, index: str, city: City, level: str,
                   period: tuple[str, str, int]) -> dict[str, dict[str, Any]]:
    first, last, days = period
    definition = settings.definitions[index]
    sums, cases = place_sums(city, level, first, last), case_figures(city, level, first, last)
    places = set(sums) | (set(cases) if any(c.case_rate for c in definition.components) else set())
    found = {}
    for place in places:
        weighted, scored_weight, all_weight, components = 0.0, 0.0, 0.0, {}
        for c in definition.components:
            if c.case_rate is not None:
                top, bottom = CASE_RATE_FIGURES[c.case_rate]
                numerator, denominator = cases.get(place, {}).get(top, 0), cases.get(place, {}).get(bottom, 0)
            else:
                numerator, denominator = sums[place].get(c.breaking, 0.0), sums[place].get(c.observed, 0.0)
            all_weight += c.weight
            rate = numerator / denominator if denominator > 0 else None
            score = None
            if rate is not None and denominator >= c.min_volume_per_day * days:
                score = 100 * min(1.0, max(0.0, (c.worst_rate - rate) / (c.worst_rate - c.best_rate)))
                weighted += c.weight * score
                scored_weight += c.weight
            components[c.name] = (rate, score)
        score_out = round(weighted / scored_weight, 2) if scored_weight else None
        grade = None
        if score_out is not None:
            grade = next(b.grade for b in definition.bands if score_out >= b.min_score)
        found[place] = {"score": score_out, "grade": grade, "coverage": scored_weight / all_weight,
                        "components": components}
    return found


def expected_ranks(indices: dict[str, dict[str, Any]], min_coverage: float) -> dict[str, int]:
    eligible = {p: v["score"] for p, v in indices.items()
                if v["score"] is not None and v["coverage"] >= min_coverage}
    return {p: 1 + sum(1 for other in eligible.values() if other > s) for p, s in eligible.items()}


LEVELS = ("intersection", "grid", "district", "city")


@pytest.mark.parametrize("index", ["traffic", "sanitation"])
@pytest.mark.parametrize("level", LEVELS)
def test_every_index_equals_the_documented_formulas(service: IndexService, city: City, index: str,
                                                    level: str) -> None:
    november = parse_period(PeriodKind.MONTH, "2026-11")
    got = service.figures(november)[index].levels[level]
    want = expected_index(service.settings, index, city, level, NOVEMBER)
    assert set(got) == set(want) and len(want) > 0
    for place, expected in want.items():
        index_of = got[place]
        assert (index_of.score, index_of.grade) == (expected["score"], expected["grade"]), place
        assert index_of.coverage == pytest.approx(expected["coverage"])
        shown = {c.name: (c.rate, None if c.score is None else round(c.score, 2))
                 for c in index_of.components}
        assert shown == {name: (rate, None if score is None else round(score, 2))
                         for name, (rate, score) in expected["components"].items()}, place


@pytest.mark.parametrize("index", ["traffic", "sanitation"])
@pytest.mark.parametrize("level", ["intersection", "grid", "district"])
def test_every_rank_and_change_equals_the_documented_rules(service: IndexService, city: City, index: str,
                                                           level: str) -> None:
    settings = service.settings
    ranking = service.figures(parse_period(PeriodKind.MONTH, "2026-11"))[index].rankings[level]
    now = expected_index(settings, index, city, level, NOVEMBER)
    before = expected_index(settings, index, city, level, OCTOBER)
    ranks_now = expected_ranks(now, settings.ranking.min_coverage)
    ranks_before = expected_ranks(before, settings.ranking.min_coverage)
    assert {p.place: p.rank for p in ranking.ranked} == ranks_now
    assert len(ranks_now) > 1 or (index, level) == ("sanitation", "intersection")  # no bin at a crossing
    assert [p.rank for p in ranking.ranked] == sorted(ranks_now.values())  # listed best first
    for standing in ranking.ranked:
        previous = before.get(standing.place, {}).get("score")
        assert standing.previous_score == previous
        assert standing.score_change == (None if previous is None else round(now[standing.place]["score"]
                                                                              - previous, 2))
        assert standing.previous_rank == ranks_before.get(standing.place)
    changes = {p: round(now[p]["score"] - before[p]["score"], 2) for p in ranks_now if p in ranks_before}
    improved = sorted((p for p, c in changes.items() if c > 0), key=lambda p: (-changes[p], p))
    worsened = sorted((p for p, c in changes.items() if c < 0), key=lambda p: (changes[p], p))
    assert [p.place for p in ranking.most_improved] == improved[:settings.ranking.movers]
    assert [p.place for p in ranking.most_worsened] == worsened[:settings.ranking.movers]


def test_an_intersection_with_twelve_vehicles_a_day_is_listed_unranked(service: IndexService) -> None:
    ranking = service.figures(parse_period(PeriodKind.MONTH, "2026-11"))["traffic"].rankings["intersection"]
    quiet = ranking.by_place()["x-d1-g1-2"]
    assert (quiet.rank, quiet.reason) == (None, "no_score")
    assert "x-d1-g1-2" not in {p.place for p in (*ranking.ranked, *ranking.most_improved,
                                                  *ranking.most_worsened)}
    assert len(ranking.ranked) == 4 * 3 * 3 - 1


def test_without_the_case_loop_the_sanitation_index_covers_too_little_to_rank(
        city: City, tmp_path: Path) -> None:
    store = SqliteStore.in_directory(tmp_path / "data", KEEP_ALL)
    store.write_exposures(city.exposure_totals())
    store.flush()
    service = IndexService(IndexSettings(), TIME_ZONE, store, now_ms=lambda: local_ms(date(2026, 12, 10)))
    ranking = service.figures(parse_period(PeriodKind.MONTH, "2026-11"))["sanitation"].rankings["district"]
    store.close()
    # Bins and odour sensors carry 45 of the 100 weights; the case components have no denominator.
    assert ranking.ranked == ()
    assert {(p.reason, round(p.coverage, 2)) for p in ranking.unranked} == {("low_coverage", 0.45)}
