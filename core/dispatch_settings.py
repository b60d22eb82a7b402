"""Settings of the sanitation dispatch planner: depots, their trucks, shifts and transfer stations.

Kept apart from core/settings.py so that file gains one `dispatch:` section. How a city fills these in is
in docs/dispatch.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def clock_minutes(clock: str) -> int:
    """Minutes after midnight of an "HH:MM" clock time."""
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


class TransferStationSettings(_Section):
    station_id: str = Field(min_length=1, description="Name of the transfer station trucks unload at.")
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    unload_s: float = Field(900, ge=0, description="Time to weigh and unload a truck there.")


class TruckSettings(_Section):
    truck_id: str = Field(min_length=1, description="Fleet number, unique within the city.")
    capacity_l: float | None = Field(
        None, gt=0, description="Compacted litres of bin contents the truck takes in one trip.")
    capacity_bins: int | None = Field(
        None, gt=0, description="Or: how many bins the truck empties in one trip (whatever their fill).")

    @model_validator(mode="after")
    def _one_capacity(self) -> TruckSettings:
        if (self.capacity_l is None) == (self.capacity_bins is None):
            raise ValueError("a truck needs exactly one of capacity_l and capacity_bins")
        return self


class ShiftSettings(_Section):
    shift_id: str = Field(min_length=1, description="Name of the shift, e.g. early.")
    start: str = Field(description="Local start time HH:MM (the dispatch time zone).")
    end: str = Field(description="Local end time HH:MM; earlier than start: the shift ends the next day.")

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError("a shift time is HH:MM (24-hour clock)")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> ShiftSettings:
        if self.start == self.end:
            raise ValueError("a shift cannot start and end at the same time")
        return self


class DepotSettings(_Section):
    depot_id: str = Field(min_length=1, description="Name of the depot the trucks leave from and return to.")
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    districts: list[str] = Field(
        default_factory=list, description="Bins whose `district` tag is in this list are this depot's; bins "
        "of no listed district go to the nearest depot.")
    transfer_station: TransferStationSettings = Field(description="Where this depot's trucks unload.")
    trucks: list[TruckSettings] = Field(min_length=1, description="The trucks based at this depot.")
    shifts: list[ShiftSettings] = Field(min_length=1, description="The service windows of this depot.")

    @model_validator(mode="after")
    def _unique_shifts_one_unit(self) -> DepotSettings:
        ids = [shift.shift_id for shift in self.shifts]
        if len(set(ids)) != len(ids):
            raise ValueError(f"depot {self.depot_id}: shift ids must be unique")
        if len({truck.capacity_l is None for truck in self.trucks}) > 1:
            raise ValueError(f"depot {self.depot_id}: all its trucks give capacity_l, or all capacity_bins")
        return self

    def shift(self, shift_id: str) -> ShiftSettings | None:
        return next((shift for shift in self.shifts if shift.shift_id == shift_id), None)


class DispatchSettings(_Section):
    time_zone: str = Field("UTC", description="IANA time zone the shift times are in.")
    depots: list[DepotSettings] = Field(default_factory=list, description="Depots with trucks and shifts.")
    road_graph_file: Path | None = Field(
        None, description="GeoJSON FeatureCollection of LineStrings (roads); travel follows them when set. "
        "Relative: to the configuration file. Features may carry `speed_kmh`; `oneway: true` one way only.")
    speed_kmh: float = Field(25.0, gt=0, description="Truck speed between stops (and on roads without one).")
    detour_factor: float = Field(
        1.3, ge=1, description="Without a road graph: road distance = great-circle distance x this.")
    service_s: float = Field(90, ge=0, description="Time to empty one bin (stop, lift, tip, go).")
    bin_volume_l: float = Field(
        240, gt=0, description="Bin volume when the registry gives none (`install.bin_volume_l`).")
    mandatory_fill_pct: float = Field(
        90.0, gt=0, le=100, description="A bin this full is emptied this shift whatever its forecast.")
    optional_value_m: float = Field(
        3000, ge=0, description="Detour in metres worth taking for the most urgent optional bin; less "
        "urgent bins are worth proportionally less (docs/dispatch.md).")
    urgency_horizon_h: float = Field(
        24, gt=0, description="An optional bin predicted full this long after the next window counts half "
        "as urgent as one full at its start.")
    flag_types: list[str] = Field(
        default_factory=lambda: ["bin_fire", "bin_tilt", "device_offline"],
        description="Open violations of these types keep a bin out of the routes, for a person to check.")
    urgency_types: list[str] = Field(
        default_factory=lambda: ["bin_overflow", "bin_near_full"],
        description="Open violations of these types make an optional bin more urgent.")
    time_budget_s: float = Field(20, gt=0, description="Most time the solver may take per plan.")
    iterations: int = Field(
        20_000, ge=0, description="Solver iterations per plan: a plan stops after these (the same plan for "
        "the same inputs) or at the time budget, whichever comes first.")
    seed: int = Field(1, ge=0, description="Seed of the solver's random choices (fixed: plans repeat).")
    plans_kept: int = Field(200, ge=1, description="Newest plans kept in the relational database.")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> DispatchSettings:
        depots = [depot.depot_id for depot in self.depots]
        trucks = [truck.truck_id for depot in self.depots for truck in depot.trucks]
        if len(set(depots)) != len(depots):
            raise ValueError("depot ids must be unique")
        if len(set(trucks)) != len(trucks):
            raise ValueError("truck ids must be unique across depots")
        return self

    def depot(self, depot_id: str) -> DepotSettings | None:
        return next((depot for depot in self.depots if depot.depot_id == depot_id), None)
