"""The filter index that webhook fan-out and the live streams use: it finds exactly the subscribers whose
filter wants a change, as checking every filter would, while looking at only the few that can."""

from __future__ import annotations

import random

from api.alerts.filters import BoundingBox, EventKind, FilterIndex, ViolationFilter
from core.models import Severity, ViolationStatus
from processors.cases.sla import CaseEventKind, CaseSlaEvent
from processors.outputs.feed import FeedEntry, ViolationFeed
from tests.support.alerts import violation
from tests.unit.test_case_sla_events import CASE

TYPES = ("illegal_parking", "bin_overflow", "bin_near_full")
GRIDS = ("FT-11", "FT-12", "LH-02")
DISTRICTS = ("futian", "luohu")
DEPARTMENTS = ("traffic", "sanitation")
DEVICES = ("cam-1", "cam-2", "bin-7")


def some(rng: random.Random, values: tuple[str, ...]) -> tuple[str, ...]:
    """No restriction half of the time, otherwise one or two of `values`."""
    return () if rng.random() < 0.5 else tuple(rng.sample(values, rng.choice((1, 2))))


def random_filter(rng: random.Random) -> ViolationFilter:
    return ViolationFilter(
        type=some(rng, TYPES), grid=some(rng, GRIDS), district=some(rng, DISTRICTS),
        department=some(rng, DEPARTMENTS), device=some(rng, DEVICES),
        severity=(Severity.HIGH,) if rng.random() < 0.2 else (),
        status=(ViolationStatus.CLEARED,) if rng.random() < 0.2 else (),
        bbox=BoundingBox(min_lon=114.0, min_lat=22.5, max_lon=114.1, max_lat=22.6) if rng.random() < 0.2
        else None,
        events=rng.choice(((), (), (EventKind.VIOLATION,), (EventKind.CASE_SLA_BREACH,),
                           (EventKind.VIOLATION, EventKind.CASE_SLA_WARNING))))


def random_entries(rng: random.Random, count: int) -> list[FeedEntry]:
    feed = ViolationFeed(count * 2)
    entries: list[FeedEntry] = []
    for n in range(count):
        if rng.random() < 0.1:
            kind = rng.choice((CaseEventKind.SLA_WARNING, CaseEventKind.SLA_BREACH))
            entries += feed.publish_case_events([CaseSlaEvent(kind, CASE, 10_000 + n, 10_500 + n)])
            continue
        entries += feed.publish([violation(
            n, type=rng.choice(TYPES), grid=rng.choice(GRIDS), district=rng.choice(DISTRICTS),
            department=rng.choice(DEPARTMENTS), device=rng.choice(DEVICES),
            severity=rng.choice((Severity.HIGH, Severity.LOW)),
            status=rng.choice((ViolationStatus.OPEN, ViolationStatus.CLEARED)),
            lat=rng.choice((22.55, 23.0)))])
    return entries


def test_the_index_finds_exactly_the_filters_that_match_each_change() -> None:
    rng = random.Random(19)
    filters = {f"sub-{n}": random_filter(rng) for n in range(400)}
    index: FilterIndex[str] = FilterIndex()
    for item, filter in filters.items():
        index.add(item, filter)
    matched = 0
    for entry in random_entries(rng, 500):
        expected = {item for item, filter in filters.items() if filter.matches_entry(entry)}
        found = index.matching(entry)
        assert len(found) == len(set(found))  # nobody twice
        assert set(found) == expected
        matched += len(found)
    assert matched > 1000  # the filters were not all too narrow to match anything


def test_a_changed_or_removed_filter_is_no_longer_matched_under_its_old_values() -> None:
    index: FilterIndex[str] = FilterIndex()
    index.add("a", ViolationFilter(grid=("FT-11",)))
    index.add("b", ViolationFilter(grid=("FT-11", "LH-02"), type=("bin_overflow",)))
    index.add("all", ViolationFilter())
    [ft11] = ViolationFeed(10).publish([violation(1, grid="FT-11", type="bin_overflow")])
    assert sorted(index.matching(ft11)) == ["a", "all", "b"]

    index.add("a", ViolationFilter(grid=("LH-02",)))
    index.remove("b")
    index.remove("never-added")
    assert index.matching(ft11) == ["all"] and len(index) == 2


def test_a_filter_with_many_values_is_still_matched_exactly() -> None:
    # 40 devices x 10 grids x 3 types: more combinations than the index files one filter under.
    devices = tuple(f"cam-{n}" for n in range(40))
    wide = ViolationFilter(device=devices, grid=tuple(f"G-{n}" for n in range(10)), type=TYPES)
    index: FilterIndex[str] = FilterIndex()
    index.add("wide", wide)
    feed = ViolationFeed(10)
    [inside] = feed.publish([violation(1, device="cam-39", grid="G-9", type="bin_overflow")])
    [outside] = feed.publish([violation(2, device="cam-40", grid="G-9", type="bin_overflow")])
    assert index.matching(inside) == ["wide"] and index.matching(outside) == []
