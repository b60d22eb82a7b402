"""The plans an API instance has made, newest `plans_kept` of them, and the travel model they share."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from core.dispatch_settings import DispatchSettings
from processors.dispatch.model import Plan
from processors.dispatch.travel import GreatCircleTravel, RoadGraphTravel, TravelModel


class PlanBoard:
    """Plans by id, in memory: a restart or another api replica starts with none (docs/dispatch.md)."""

    def __init__(self, settings: DispatchSettings | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings or DispatchSettings()
        self.clock = clock
        self._plans: OrderedDict[str, Plan] = OrderedDict()
        self._lock = threading.Lock()
        self._travel: TravelModel | None = None
        # One plan or re-plan at a time: two reports for one plan must not both re-plan its old revision.
        self.planning = threading.Lock()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def travel(self) -> TravelModel:
        """The road graph's travel times when one is configured (read once), else great-circle x detour."""
        with self._lock:
            if self._travel is None:
                settings = self.settings
                if settings.road_graph_file is not None:
                    self._travel = RoadGraphTravel.from_file(
                        settings.road_graph_file, speed_kmh=settings.speed_kmh,
                        detour_factor=settings.detour_factor)
                else:
                    self._travel = GreatCircleTravel(settings.speed_kmh, settings.detour_factor)
            return self._travel

    def put(self, plan: Plan) -> None:
        with self._lock:
            self._plans.pop(plan.plan_id, None)
            self._plans[plan.plan_id] = plan
            while len(self._plans) > self.settings.plans_kept:
                self._plans.popitem(last=False)

    def get(self, plan_id: str) -> Plan | None:
        with self._lock:
            return self._plans.get(plan_id)

    def plans(self) -> list[Plan]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._plans.values()))
