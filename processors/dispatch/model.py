"""The planner's inputs and its plan, as plain frozen values (times epoch ms UTC, distances metres)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class Place:
    place_id: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Truck:
    truck_id: str
    # In the truck's capacity unit: litres, or bins.
    capacity: int


class CapacityUnit(StrEnum):
    LITRES = "litres"
    BINS = "bins"


@dataclass(frozen=True)
class BinCandidate:
    """A bin that a shift may visit, with its forecast."""

    device_id: str
    lat: float | None
    lon: float | None
    fill_pct: float
    computed_time_ms: int
    predicted_full_ms: int | None
    slope_pct_per_h: float | None
    volume_l: float
    district: str | None = None
    # Open violations that make the bin more urgent (overflow, near full), counted.
    urgency_count: int = 0
    # An overflow violation is open: the bin overflows already.
    overflowing: bool = False
    # Open violations that keep it out of the routes (fire, tilt, offline), by type.
    flags: tuple[str, ...] = ()
    # The bin's open overflow (else near-full) case, which the stop's report moves on (docs/dispatch.md).
    case_id: str | None = None

    def fill_at(self, time_ms: int) -> float:
        """Expected fill at `time_ms`: the forecast's line, at most 100%, never below the last reading."""
        if not self.slope_pct_per_h or self.slope_pct_per_h <= 0 or time_ms <= self.computed_time_ms:
            return min(self.fill_pct, 100.0)
        return min(100.0, self.fill_pct + self.slope_pct_per_h * (time_ms - self.computed_time_ms) / 3.6e6)


@dataclass(frozen=True)
class ShiftWindow:
    shift_id: str
    start_ms: int
    end_ms: int
    # Start of the next service window: a bin full before it must be emptied in this one.
    next_start_ms: int


class StopStatus(StrEnum):
    PLANNED = "planned"
    # The truck is driving to it: re-planning keeps it where it is.
    UNDER_WAY = "under_way"
    DONE = "done"


@dataclass(frozen=True)
class Stop:
    device_id: str
    lat: float
    lon: float
    eta_ms: int
    expected_fill_pct: float
    # The truck's load after emptying this bin (capacity unit).
    load_after: int
    mandatory: bool
    status: StopStatus = StopStatus.PLANNED
    done_time_ms: int | None = None
    case_id: str | None = None


@dataclass(frozen=True)
class Route:
    truck_id: str
    capacity: int
    depart_ms: int
    stops: tuple[Stop, ...]
    transfer_eta_ms: int
    return_ms: int
    distance_m: int

    @property
    def load(self) -> int:
        return self.stops[-1].load_after if self.stops else 0


class LeftReason(StrEnum):
    """Why a mandatory bin is not in the plan (citywatch's own codes, in docs/dispatch.md)."""

    NO_LOCATION = "no_location"
    LARGER_THAN_TRUCK = "larger_than_truck"
    UNREACHABLE_IN_SHIFT = "unreachable_in_shift"
    FLEET_CAPACITY = "fleet_capacity"
    SHIFT_TIME = "shift_time"


@dataclass(frozen=True)
class LeftOut:
    device_id: str
    reason: LeftReason


@dataclass(frozen=True)
class Flagged:
    device_id: str
    flags: tuple[str, ...]
    lat: float | None
    lon: float | None


@dataclass(frozen=True)
class Figures:
    distance_m: int
    bins_served: int
    mandatory_bins: int
    mandatory_missed: int
    optional_served: int
    optional_skipped: int
    flagged: int


@dataclass(frozen=True)
class Plan:
    plan_id: str
    revision: int
    depot_id: str
    shift: ShiftWindow
    capacity_unit: CapacityUnit
    depot: Place
    transfer_station: Place
    routes: tuple[Route, ...]
    left_out: tuple[LeftOut, ...]
    flagged: tuple[Flagged, ...]
    figures: Figures
    # Which solver made the routes ("pyvrp" or "nearest_neighbour") and what stopped it.
    solver: str
    stopped_by: str
    solve_time_s: float
    planned_time_ms: int
    mandatory: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class StopReport:
    """A stop reported done: kept apart from the plan so that no report is lost to a re-plan running at
    the same time (store/dispatch.py); `stop` is the stop as planned when it was reported."""

    plan_id: str
    truck_id: str
    stop: Stop
    done_time_ms: int
    actor: str
    note: str = ""
    photo_url: str | None = None

    @property
    def device_id(self) -> str:
        return self.stop.device_id
