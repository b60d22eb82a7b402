"""An API instance's dispatch: its settings, clock and travel model, and the plans, kept in the relational
database (store/dispatch.py) that every api replica shares."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.dispatch_settings import DispatchSettings
from core.settings import RelationalSettings
from processors.dispatch.model import Plan
from processors.dispatch.travel import GreatCircleTravel, RoadGraphTravel, TravelModel
from store.dispatch import PlanStore, StoredPlan


class PlanBoard:
    """Plans by id; without a store given, an in-memory one (API instances built in-process)."""

    def __init__(self, settings: DispatchSettings | None = None, *, store: PlanStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings or DispatchSettings()
        self.clock = clock
        self.store = store if store is not None else PlanStore.in_memory()
        self._lock = threading.Lock()
        self._travel: TravelModel | None = None
        # One plan or re-plan at a time in this process (the solver is CPU-bound); replicas are kept
        # apart by the store (a re-plan stores only over the version it started from).
        self.planning = threading.Lock()

    @classmethod
    def open(cls, settings: DispatchSettings, relational: RelationalSettings, data_dir: Path) -> PlanBoard:
        """`dispatch.sqlite3` under `data_dir`, or the shared PostgreSQL database (`relational.kind`)."""
        return cls(settings, store=PlanStore.open(relational, data_dir))

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
        """A newly made plan (revision 1), replacing the shift's plan; the newest `plans_kept` stay."""
        self.store.create(plan, keep=self.settings.plans_kept)

    def get(self, plan_id: str) -> Plan | None:
        stored = self.store.get(plan_id)
        return stored.plan if stored is not None else None

    def stored(self, plan_id: str) -> StoredPlan | None:
        return self.store.get(plan_id)

    def plans(self) -> list[Plan]:
        """Newest first."""
        return self.store.plans()

    def running(self) -> list[Plan]:
        """The plans whose shift is under way now."""
        return self.store.running(self.now_ms())

    def close(self) -> None:
        self.store.close()
