"""Evaluation figures for cases over a period [from_ms, to_ms): per department, grid, district and city.

The definitions (docs/cases.md, "Evaluation") follow the way Chinese digital urban management reports its
figures (立案数, 应结案数, 结案数, 结案率, 按期结案率, 返工率): the cases registered in the period are the
cohort; those closed by the end of the period, or whose deadline passed before it, are due (应结案); the
closure rates divide by the due cases. Everything is vectorised over columns (numpy) so a year of a city's
cases is evaluated well under a second (BENCHMARKS.md, "Case evaluation"); `CaseColumns.from_records` builds
the columns from `CaseRecord`s, a store can build them directly.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import numpy.typing as npt

# A deadline or a closing that has not happened: later than any instant.
NEVER_MS = np.iinfo(np.int64).max
SUSPENDED_STATE = "suspended"
HOUR_MS = 3_600_000
# Open cases by age at the end of the period: under a day, 1-3 days, 3-7 days, 7-30 days, 30 days and more.
DEFAULT_AGE_EDGES_H = (24, 72, 168, 720)
PERCENTILES = (50, 90)
LEVELS = ("city", "district", "grid", "department")

_COLUMNS = ("registered_ms", "deadline_ms", "closed_ms", "reworked", "returned", "suspended_ms",
            "suspended_now", "department", "grid", "district")
Int64s = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CaseRecord:
    """What evaluation needs of one case, as the case store knows it now."""

    case_id: str
    department: str
    grid: str
    district: str
    registered_ms: int
    # The deadline with suspensions taken into account; None: none yet (a suspension still running).
    deadline_ms: int | None
    closed_ms: int | None = None
    reworked: int = 0  # times the verification sent it back for rework (返工)
    returned: int = 0  # times a department returned it as not theirs (退回)
    suspended_ms: int = 0  # time spent suspended before closing (or so far, while open)
    state: str = "registered"


@dataclass(frozen=True)
class CaseColumns:
    """Cases as columns; group columns are codes into their name tuples."""

    registered_ms: Int64s
    deadline_ms: Int64s  # NEVER_MS: no deadline
    closed_ms: Int64s  # NEVER_MS: not closed
    reworked: Int64s
    returned: Int64s
    suspended_ms: Int64s
    suspended_now: Bools
    department: Int64s
    grid: Int64s
    district: Int64s
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # level -> names by code

    def __post_init__(self) -> None:
        lengths = {len(getattr(self, column)) for column in _COLUMNS}
        if len(lengths) > 1:
            raise ValueError(f"case columns differ in length: {sorted(lengths)}")
        for level in LEVELS[1:]:
            codes = getattr(self, level)
            if len(codes) and (codes.min() < 0 or codes.max() >= len(self.names.get(level, ()))):
                raise ValueError(f"{level} codes must index its {len(self.names.get(level, ()))} names")

    @classmethod
    def from_records(cls, records: Iterable[CaseRecord]) -> CaseColumns:
        codes: dict[str, dict[str, int]] = {"department": {}, "grid": {}, "district": {}}
        rows = []
        for record in records:
            rows.append((
                record.registered_ms,
                NEVER_MS if record.deadline_ms is None else record.deadline_ms,
                NEVER_MS if record.closed_ms is None else record.closed_ms,
                record.reworked, record.returned, record.suspended_ms, record.state == SUSPENDED_STATE,
                codes["department"].setdefault(record.department, len(codes["department"])),
                codes["grid"].setdefault(record.grid, len(codes["grid"])),
                codes["district"].setdefault(record.district, len(codes["district"])),
            ))
        table = np.array(rows, dtype=np.int64).reshape(-1, 10)
        return cls(
            registered_ms=table[:, 0], deadline_ms=table[:, 1], closed_ms=table[:, 2], reworked=table[:, 3],
            returned=table[:, 4], suspended_ms=table[:, 5], suspended_now=table[:, 6].astype(bool),
            department=table[:, 7], grid=table[:, 8], district=table[:, 9],
            names={level: tuple(known) for level, known in codes.items()},
        )


@dataclass(frozen=True)
class Figures:
    """One group's figures; rates are fractions (None when nothing is due), times in milliseconds."""

    registered: int
    due: int
    closed: int
    on_time: int
    reworked: int
    returned: int
    closure_rate: float | None
    on_time_rate: float | None
    rework_rate: float | None
    close_time_p50_ms: int | None
    close_time_p90_ms: int | None
    backlog: dict[str, int]
    backlog_total: int
    backlog_overdue: int
    backlog_suspended: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "registered": self.registered, "due": self.due, "closed": self.closed, "on_time": self.on_time,
            "reworked": self.reworked, "returned": self.returned, "closure_rate": self.closure_rate,
            "on_time_rate": self.on_time_rate, "rework_rate": self.rework_rate,
            "close_time_p50_ms": self.close_time_p50_ms, "close_time_p90_ms": self.close_time_p90_ms,
            "backlog": dict(self.backlog), "backlog_total": self.backlog_total,
            "backlog_overdue": self.backlog_overdue, "backlog_suspended": self.backlog_suspended,
        }


def age_labels(edges_h: Sequence[int]) -> list[str]:
    """(24, 72) -> ['lt_1d', '1d_3d', 'ge_3d']: keys of the backlog buckets."""
    names = [f"{h // 24}d" if h % 24 == 0 else f"{h}h" for h in edges_h]
    return [f"lt_{names[0]}", *(f"{a}_{b}" for a, b in itertools.pairwise(names)),
            f"ge_{names[-1]}"]


@dataclass(frozen=True)
class Evaluation:
    from_ms: int
    to_ms: int
    age_labels: list[str]
    city: Figures
    district: dict[str, Figures]
    grid: dict[str, Figures]
    department: dict[str, Figures]

    def as_json(self) -> dict[str, Any]:
        return {
            "from_ms": self.from_ms, "to_ms": self.to_ms, "city": self.city.as_dict(),
            **{level: {name: figures.as_dict() for name, figures in getattr(self, level).items()}
               for level in LEVELS[1:]},
        }

    def csv_columns(self) -> list[str]:
        return ["level", "key", "registered", "due", "closed", "on_time", "closure_rate", "on_time_rate",
                "reworked", "rework_rate", "returned", "close_time_p50_ms", "close_time_p90_ms",
                "backlog_total", "backlog_overdue", "backlog_suspended",
                *(f"backlog_{label}" for label in self.age_labels)]

    def csv_rows(self) -> list[dict[str, Any]]:
        """One row per group: the city first, then districts, grids and departments by name."""
        rows = []
        groups = [("city", "city", self.city)] + [
            (level, name, figures) for level in LEVELS[1:]
            for name, figures in sorted(getattr(self, level).items())
        ]
        for level, name, figures in groups:
            flat = figures.as_dict()
            backlog = flat.pop("backlog")
            rows.append({"level": level, "key": name, **flat,
                         **{f"backlog_{label}": count for label, count in backlog.items()}})
        return rows

    def write_csv(self, out: IO[str]) -> None:
        writer = csv.DictWriter(out, fieldnames=self.csv_columns(), lineterminator="\n")
        writer.writeheader()
        for row in self.csv_rows():
            writer.writerow({key: "" if value is None else value for key, value in row.items()})


def evaluate(cases: CaseColumns, from_ms: int, to_ms: int,
             age_edges_h: Sequence[int] = DEFAULT_AGE_EDGES_H) -> Evaluation:
    """The figures of the period [from_ms, to_ms), as of `to_ms` (docs/cases.md, "Evaluation")."""
    if to_ms <= from_ms:
        raise ValueError(f"an evaluation period ends after it starts (from {from_ms} to {to_ms})")
    if not age_edges_h or list(age_edges_h) != sorted(set(age_edges_h)) or age_edges_h[0] <= 0:
        raise ValueError(f"age bucket edges must be positive hours in increasing order: {list(age_edges_h)}")
    registered = (cases.registered_ms >= from_ms) & (cases.registered_ms < to_ms)
    closed_by_end = cases.closed_ms < to_ms
    closed = registered & closed_by_end
    due = registered & (closed_by_end | (cases.deadline_ms < to_ms))
    on_time = closed & (cases.closed_ms <= cases.deadline_ms)
    reworked = due & (cases.reworked > 0)
    returned = registered & (cases.returned > 0)
    open_at_end = (cases.registered_ms < to_ms) & ~closed_by_end
    edges = np.asarray(age_edges_h, dtype=np.int64) * HOUR_MS
    age_bucket = np.searchsorted(edges, to_ms - cases.registered_ms, side="right")
    close_time = np.maximum(cases.closed_ms - cases.registered_ms - cases.suspended_ms, 0)
    masks = {"registered": registered, "due": due, "closed": closed, "on_time": on_time,
             "reworked": reworked, "returned": returned, "backlog_total": open_at_end,
             "backlog_overdue": open_at_end & (cases.deadline_ms < to_ms),
             "backlog_suspended": open_at_end & cases.suspended_now}
    labels = age_labels(age_edges_h)
    weights = {name: mask.astype(np.float64) for name, mask in masks.items()}
    # Close times sorted once; each level regroups them with a stable sort on its group codes.
    closed_times = close_time[closed]
    order = np.argsort(closed_times)
    sorted_times = closed_times[order]
    by_level: dict[str, dict[str, Figures]] = {}
    for level in LEVELS:
        if level == "city":
            codes = np.zeros(len(cases.registered_ms), dtype=np.int64)
            names: tuple[str, ...] = ("city",)
        else:
            codes, names = getattr(cases, level), cases.names[level]
        by_level[level] = _group_figures(codes, names, weights, open_at_end, age_bucket, labels,
                                         codes[closed][order], sorted_times, keep_empty=level == "city")
    return Evaluation(from_ms=from_ms, to_ms=to_ms, age_labels=labels, city=by_level["city"]["city"],
                      district=by_level["district"], grid=by_level["grid"],
                      department=by_level["department"])


def _group_figures(codes: Int64s, names: tuple[str, ...], weights: dict[str, Floats], open_at_end: Bools,
                   age_bucket: Int64s, labels: list[str], closed_codes: Int64s, sorted_times: Int64s, *,
                   keep_empty: bool) -> dict[str, Figures]:
    """Figures per code; groups with no case registered in the period and none open at its end are left
    out unless `keep_empty`. `closed_codes` are the closed cases' codes in the order of `sorted_times`."""
    groups = len(names)
    # Weighted by the mask: much faster than counting the masked codes, and exact (float64) below 2**53.
    counts = {name: np.bincount(codes, weights=weight, minlength=groups) for name, weight in weights.items()}
    buckets = len(labels)
    backlog = np.bincount(codes[open_at_end] * buckets + age_bucket[open_at_end],
                          minlength=groups * buckets).reshape(groups, buckets)
    percentiles = _nearest_ranks(closed_codes, sorted_times, groups)
    found = {}
    for code, name in enumerate(names):
        c = {key: int(values[code]) for key, values in counts.items()}
        if not keep_empty and c["registered"] == 0 and c["backlog_total"] == 0:
            continue
        due = c["due"]
        found[name] = Figures(
            registered=c["registered"], due=due, closed=c["closed"], on_time=c["on_time"],
            reworked=c["reworked"], returned=c["returned"],
            closure_rate=c["closed"] / due if due else None,
            on_time_rate=c["on_time"] / due if due else None,
            rework_rate=c["reworked"] / due if due else None,
            close_time_p50_ms=percentiles[50][code], close_time_p90_ms=percentiles[90][code],
            backlog=dict(zip(labels, (int(n) for n in backlog[code]), strict=True)),
            backlog_total=c["backlog_total"], backlog_overdue=c["backlog_overdue"],
            backlog_suspended=c["backlog_suspended"],
        )
    return found


def _nearest_ranks(codes: Int64s, sorted_values: Int64s, groups: int) -> dict[int, list[int | None]]:
    """Per group and percentile, the nearest-rank percentile: the ceil(percent/100 * n)-th smallest value
    (None if n=0). A stable sort by group keeps each group's values in order (radix for small codes)."""
    small = codes.astype(np.uint16) if groups <= 1 << 16 else codes
    grouped = sorted_values[np.argsort(small, kind="stable")]
    sizes = np.bincount(codes, minlength=groups)
    firsts = np.cumsum(sizes) - sizes
    found = {}
    for percent in PERCENTILES:
        ranks = (percent * sizes + 99) // 100  # ceil(percent * n / 100), in integers
        picked = grouped[np.maximum(firsts + ranks - 1, 0)] if len(grouped) else np.zeros(groups, np.int64)
        found[percent] = [int(value) if size else None for value, size in zip(picked, sizes, strict=True)]
    return found
