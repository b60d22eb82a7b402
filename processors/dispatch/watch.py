"""Re-plan running plans when one of their depot's bins crosses a threshold mid-shift.

A violation of an `urgency_types` type (`bin_near_full`, `bin_overflow`) opening for a bin that a running
plan (its shift under way) of the bin's depot does not visit means that bin may now have to be emptied
this shift: the plan is re-planned. The re-planning runs on the watch's own thread, one plan at a time,
so the pipeline that publishes violations never waits for a solver; a plan already waiting is not queued
twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from core.models import Violation, ViolationStatus
from processors.dispatch.board import PlanBoard
from processors.dispatch.candidates import depot_for
from processors.outputs.feed import FeedEntry, violations_of

log = logging.getLogger(__name__)


class CrossingWatch:
    def __init__(self, board: PlanBoard, replan: Callable[[str], object]) -> None:
        self._board = board
        self._replan = replan
        # Urgent violations not looked at yet, then the plans they made due (each queued once).
        self._crossings: list[Violation] = []
        self._pending: dict[str, None] = {}
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.replans = 0

    def on_violations(self, entries: Sequence[FeedEntry]) -> None:
        """Feed listener: hand the newly urgent bins to the watch's thread (which reads the running plans
        from the plan store: the pipeline never waits for the database)."""
        settings = self._board.settings
        urgent = [violation for violation in violations_of(entries)
                  if violation.status is ViolationStatus.OPEN and violation.type in settings.urgency_types]
        if not urgent or self._stopping:
            return
        with self._wake:
            self._crossings.extend(urgent)
            self._wake.notify()

    def _due(self, urgent: Sequence[Violation]) -> list[str]:
        """The running plans of the urgent bins' depots that do not visit them."""
        settings = self._board.settings
        running = self._board.running()
        due = []
        for violation in urgent:
            location = violation.location
            depot_id = depot_for(violation.tags.get("district"), location.lat if location else None,
                                 location.lon if location else None, settings.depots)
            for plan in running:
                visited = {stop.device_id for route in plan.routes for stop in route.stops}
                if plan.depot_id == depot_id and violation.device_id not in visited:
                    due.append(plan.plan_id)
        return due

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dispatch-replans", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._crossings and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                crossings, self._crossings = self._crossings, []
            if crossings:
                try:
                    due = self._due(crossings)
                except Exception:  # the plan store is unreachable: the next crossing looks again
                    log.exception("reading the running plans after a bin crossed a threshold failed")
                    continue
                with self._wake:
                    self._pending.update(dict.fromkeys(due))
            with self._wake:
                if not self._pending:
                    continue
                plan_id = next(iter(self._pending))
                del self._pending[plan_id]
            try:
                self._replan(plan_id)
                self.replans += 1
            except Exception:  # a failed re-plan keeps the plan as it was; the next crossing tries again
                log.exception("re-planning %s after a bin crossed a threshold failed", plan_id)
