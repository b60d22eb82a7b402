"""Evaluation figures on a generated week of cases equal the figures counted case by case from the
definitions in docs/cases.md ("Evaluation"), per city, district, grid and department."""

from __future__ import annotations

import csv
import io
import json
import random

import pytest

from processors.cases.evaluation import CaseColumns, CaseRecord, evaluate

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WEEK_FROM_MS = 1_796_572_800_000  # 2026-12-07T00:00:00+08:00, a Monday
WEEK_TO_MS = WEEK_FROM_MS + 7 * DAY_MS
GRIDS = {f"grid-{n:02d}": f"district-{n % 3}" for n in range(12)}
DEPARTMENTS = ("sanitation", "roads", "water", "parks")


def generated_week(seed: int = 7, cases: int = 3000) -> list[CaseRecord]:
    """Cases registered from 40 days before the week to a day after it; some closed (before, inside or
    after the week's end), late or on time, reworked, returned, suspended; a few exactly on the edges."""
    rng = random.Random(seed)
    records = []
    for number in range(cases):
        registered = rng.randrange(WEEK_FROM_MS - 40 * DAY_MS, WEEK_TO_MS + DAY_MS)
        deadline = None if rng.random() < 0.03 else registered + rng.choice((2, 4, 24, 72)) * HOUR_MS
        closed = None if rng.random() < 0.3 else registered + rng.randrange(10 * 60_000, 5 * DAY_MS)
        edge = rng.random()
        if edge < 0.02:
            registered = WEEK_FROM_MS
        elif edge < 0.04:
            registered = WEEK_TO_MS
        elif edge < 0.06 and deadline is not None:
            closed = deadline  # closed at the deadline: on time
        elif edge < 0.08 and closed is not None:
            closed = WEEK_TO_MS  # closed at the end of the period: still open in it
        elif edge < 0.10 and deadline is not None:
            deadline = WEEK_TO_MS  # due exactly at the end: not yet due
        grid = rng.choice(list(GRIDS))
        suspended = rng.choice((0, 0, 0, rng.randrange(1, 2 * HOUR_MS)))
        state = "closed" if closed is not None else rng.choice(("dispatched", "in_progress", "suspended"))
        records.append(CaseRecord(
            case_id=f"case-{number:05d}", department=rng.choice(DEPARTMENTS), grid=grid,
            district=GRIDS[grid], registered_ms=registered, deadline_ms=deadline, closed_ms=closed,
            reworked=rng.choice((0, 0, 0, 0, 1, 2)), returned=rng.choice((0, 0, 0, 0, 0, 1)),
            suspended_ms=suspended, state=state,
        ))
    return records


def percentile(values: list[int], percent: int) -> int | None:
    """Nearest rank: the ceil(percent/100 * n)-th smallest."""
    if not values:
        return None
    ordered = sorted(values)
    rank = -(-percent * len(ordered) // 100)
    return ordered[rank - 1]


def counted_by_hand(records: list[CaseRecord], start: int, end: int) -> dict:
    """The documented definitions, case by case."""
    registered = due = closed = on_time = reworked = returned = 0
    open_total = open_overdue = open_suspended = 0
    backlog = {"lt_1d": 0, "1d_3d": 0, "3d_7d": 0, "7d_30d": 0, "ge_30d": 0}
    close_times = []
    for case in records:
        closed_by_end = case.closed_ms is not None and case.closed_ms < end
        if start <= case.registered_ms < end:
            registered += 1
            deadline_passed = case.deadline_ms is not None and case.deadline_ms < end
            if closed_by_end or deadline_passed:
                due += 1
                if case.reworked > 0:
                    reworked += 1
            if closed_by_end:
                closed += 1
                # A case without a deadline is never late.
                if case.deadline_ms is None or case.closed_ms <= case.deadline_ms:
                    on_time += 1
                close_times.append(max(0, case.closed_ms - case.registered_ms - case.suspended_ms))
            if case.returned > 0:
                returned += 1
        if case.registered_ms < end and not closed_by_end:
            open_total += 1
            open_overdue += case.deadline_ms is not None and case.deadline_ms < end
            open_suspended += case.state == "suspended"
            age_days = (end - case.registered_ms) / DAY_MS
            label = ("lt_1d" if age_days < 1 else "1d_3d" if age_days < 3 else "3d_7d" if age_days < 7
                     else "7d_30d" if age_days < 30 else "ge_30d")
            backlog[label] += 1
    return {
        "registered": registered, "due": due, "closed": closed, "on_time": on_time, "reworked": reworked,
        "returned": returned, "closure_rate": closed / due if due else None,
        "on_time_rate": on_time / due if due else None, "rework_rate": reworked / due if due else None,
        "close_time_p50_ms": percentile(close_times, 50), "close_time_p90_ms": percentile(close_times, 90),
        "backlog": backlog, "backlog_total": open_total, "backlog_overdue": open_overdue,
        "backlog_suspended": open_suspended,
    }


def expected_figures(records: list[CaseRecord], start: int, end: int) -> dict:
    levels: dict = {"city": counted_by_hand(records, start, end)}
    for level in ("district", "grid", "department"):
        groups: dict[str, list[CaseRecord]] = {}
        for case in records:
            groups.setdefault(getattr(case, level), []).append(case)
        figures = {name: counted_by_hand(cases, start, end) for name, cases in groups.items()}
        levels[level] = {name: f for name, f in figures.items() if f["registered"] or f["backlog_total"]}
    return {"from_ms": start, "to_ms": end, **levels}


WEEK = generated_week()


def test_the_figures_of_a_week_are_those_counted_case_by_case():
    evaluation = evaluate(CaseColumns.from_records(WEEK), WEEK_FROM_MS, WEEK_TO_MS)
    expected = expected_figures(WEEK, WEEK_FROM_MS, WEEK_TO_MS)
    assert evaluation.as_json() == expected
    city = expected["city"]
    # The generated week exercises every figure.
    assert 0 < city["on_time"] < city["closed"] < city["due"] < city["registered"]
    assert city["reworked"] and city["returned"] and city["backlog_overdue"] and city["backlog_suspended"]
    assert all(city["backlog"].values())
    assert set(expected["grid"]) == set(GRIDS) and set(expected["department"]) == set(DEPARTMENTS)


def test_a_single_day_and_a_period_with_no_case_in_it():
    day = evaluate(CaseColumns.from_records(WEEK), WEEK_FROM_MS + 2 * DAY_MS, WEEK_FROM_MS + 3 * DAY_MS)
    assert day.as_json() == expected_figures(WEEK, WEEK_FROM_MS + 2 * DAY_MS, WEEK_FROM_MS + 3 * DAY_MS)
    before = evaluate(CaseColumns.from_records(WEEK), 0, 1000)
    assert before.city.registered == 0 and before.city.closure_rate is None
    assert before.city.close_time_p50_ms is None and before.district == {} and before.grid == {}


def test_the_edges_of_the_period_and_the_deadline():
    at = WEEK_FROM_MS
    cases = [
        CaseRecord("at-start", "roads", "grid-00", "district-0", at, at + HOUR_MS, at + HOUR_MS),
        CaseRecord("at-end", "roads", "grid-00", "district-0", WEEK_TO_MS, WEEK_TO_MS + 1, None),
        CaseRecord("late", "roads", "grid-00", "district-0", at, at + HOUR_MS, at + HOUR_MS + 1),
        CaseRecord("closed-at-end", "roads", "grid-00", "district-0", at, WEEK_TO_MS, WEEK_TO_MS),
        CaseRecord("not-yet-due", "roads", "grid-00", "district-0", at, WEEK_TO_MS + 1, None),
    ]
    city = evaluate(CaseColumns.from_records(cases), WEEK_FROM_MS, WEEK_TO_MS).city
    # Registered: all but "at-end"; due: closed in the period or deadline before its end.
    assert (city.registered, city.due, city.closed, city.on_time) == (4, 2, 2, 1)
    # Open at the end: "closed-at-end" and "not-yet-due", both exactly seven days old.
    assert city.backlog_total == 2 and city.backlog["7d_30d"] == 2 and city.backlog["3d_7d"] == 0


def test_csv_rows_carry_the_json_figures_with_empty_cells_for_no_value():
    evaluation = evaluate(CaseColumns.from_records(WEEK), WEEK_FROM_MS, WEEK_TO_MS)
    out = io.StringIO()
    evaluation.write_csv(out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    figures = evaluation.as_json()
    assert [(r["level"], r["key"]) for r in rows[:4]] == [
        ("city", "city"), ("district", "district-0"), ("district", "district-1"), ("district", "district-2")]
    assert len(rows) == 1 + 3 + len(GRIDS) + len(DEPARTMENTS)
    for row in rows:
        source = figures["city"] if row["level"] == "city" else figures[row["level"]][row["key"]]
        assert int(row["registered"]) == source["registered"]
        assert float(row["on_time_rate"]) == pytest.approx(source["on_time_rate"])
        assert int(row["backlog_ge_30d"]) == source["backlog"]["ge_30d"]
    json.dumps(figures)  # JSON-ready as it is
    empty = io.StringIO()
    evaluate(CaseColumns.from_records(WEEK), 0, 1000).write_csv(empty)
    city_row = next(csv.DictReader(io.StringIO(empty.getvalue())))
    assert city_row["closure_rate"] == "" and city_row["close_time_p90_ms"] == ""


def test_other_age_buckets_and_bad_arguments():
    evaluation = evaluate(CaseColumns.from_records(WEEK), WEEK_FROM_MS, WEEK_TO_MS, age_edges_h=(12, 48))
    assert list(evaluation.city.backlog) == ["lt_12h", "12h_2d", "ge_2d"]
    assert sum(evaluation.city.backlog.values()) == evaluation.city.backlog_total
    with pytest.raises(ValueError, match="ends after it starts"):
        evaluate(CaseColumns.from_records(WEEK), WEEK_TO_MS, WEEK_FROM_MS)
    with pytest.raises(ValueError, match="increasing order"):
        evaluate(CaseColumns.from_records(WEEK), WEEK_FROM_MS, WEEK_TO_MS, age_edges_h=(48, 12))


def test_columns_that_do_not_fit_together_are_refused():
    columns = CaseColumns.from_records(WEEK[:10])
    with pytest.raises(ValueError, match="case columns differ in length"):
        CaseColumns(**{**columns.__dict__, "closed_ms": columns.closed_ms[:5]})
    with pytest.raises(ValueError, match="grid codes must index its"):
        CaseColumns(**{**columns.__dict__, "names": {**columns.names, "grid": ()}})
