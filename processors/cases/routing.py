"""Which violations open a case, and who owns it: the first `cases.routes` entry that matches.

A route matches on the violation's type, its `grid`, `district` and `department` tags, and the local time
of day it started at (in the city's time zone, `traffic.time_zone`). Its case is owned by the route's
department, with the route's event category code and priority; the case type's verification policy
(`cases.types`) says whether the sensors or a person confirm the work.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from core.case_settings import CasePriority, CaseRoute, CaseSettings, Verification
from core.local_time import parse_window
from core.models import Violation


@dataclass(frozen=True)
class Routed:
    department: str
    category: str
    priority: CasePriority
    verify: Verification
    # The place a case is de-duplicated on: the violation's device (the bin, the camera, the probe).
    place: str


@dataclass(frozen=True)
class _CompiledRoute:
    route: CaseRoute
    windows: tuple[tuple[int, int], ...]  # minutes of the local day, end exclusive

    def matches(self, case_type: str, tags: Mapping[str, str], minute_of_day: int) -> bool:
        match = self.route.match
        return ((not match.types or case_type in match.types)
                and (not match.grids or tags.get("grid") in match.grids)
                and (not match.districts or tags.get("district") in match.districts)
                and (not match.departments or tags.get("department") in match.departments)
                and (not self.windows or any(start <= minute_of_day < end for start, end in self.windows)))


class CaseRouter:
    def __init__(self, settings: CaseSettings, time_zone: str) -> None:
        self.settings = settings
        self._zone = zoneinfo.ZoneInfo(time_zone)
        self._routes = [_CompiledRoute(route, tuple(parse_window(w) for w in route.match.hours))
                        for route in settings.routes]
        # The types some route can take (None: any type, a route matches on no type).
        self._types: frozenset[str] | None = (
            None if any(not route.match.types for route in settings.routes)
            else frozenset(t for route in settings.routes for t in route.match.types))
        # The decision depends only on the type, the three tags and the local time of day, so it is
        # remembered per (type, grid, district, department, part of the day): by the hour when every
        # window starts and ends on the hour, else by the minute. The local minute of an epoch minute is
        # remembered too (a time zone's offset only changes on a whole minute).
        edges = [edge for compiled in self._routes for window in compiled.windows for edge in window]
        self._day_part_minutes = 60 if all(edge % 60 == 0 for edge in edges) else 1
        self._decisions: dict[tuple[str, str | None, str | None, str | None, int], CaseRoute | None] = {}
        self._local_minutes: dict[int, int] = {}

    def may_take(self, case_type: str) -> bool:
        """Whether some route could take a violation of this type (its tags and time decide which)."""
        return self._types is None or case_type in self._types

    @property
    def enabled(self) -> bool:
        """Whether any violation can open a case."""
        return bool(self._routes)

    def route(self, violation: Violation) -> Routed | None:
        """The case a newly opened violation belongs to, or None when no route takes it."""
        route = self.route_facts(violation.type, violation.tags, violation.start_time_ms)
        if route is None:
            return None
        return Routed(department=route.department, category=route.category, priority=route.priority,
                      verify=self.settings.verification_of(violation.type), place=violation.device_id)

    def route_facts(self, case_type: str, tags: Mapping[str, str], time_ms: int) -> CaseRoute | None:
        """The first route taking a case of this type with these `grid`, `district` and `department` tags
        at this time (a violation's start, a citizen's report), or None."""
        minute = self._local_minute(time_ms)
        key = (case_type, tags.get("grid"), tags.get("district"), tags.get("department"),
               minute // self._day_part_minutes)
        try:
            return self._decisions[key]
        except KeyError:
            pass
        found = next((compiled.route for compiled in self._routes
                      if compiled.matches(case_type, tags, minute)), None)
        if len(self._decisions) >= _CACHED_DECISIONS:
            self._decisions.clear()
        self._decisions[key] = found
        return found

    def _local_minute(self, time_ms: int) -> int:
        """Minutes after local midnight of the local time at `time_ms`."""
        epoch_minute = time_ms // 60_000
        minute = self._local_minutes.get(epoch_minute)
        if minute is None:
            local = datetime.fromtimestamp(epoch_minute * 60, UTC).astimezone(self._zone)
            minute = local.hour * 60 + local.minute
            if len(self._local_minutes) >= _CACHED_DECISIONS:
                self._local_minutes.clear()
            self._local_minutes[epoch_minute] = minute
        return minute


# Decisions and local minutes remembered (each a small tuple): cleared when full, refilled as needed.
_CACHED_DECISIONS = 50_000
