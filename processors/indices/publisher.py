"""Publishes the reports due on schedule, in the background of the api role and `citywatch up`.

Every `indices.reports.check_interval_s` it asks the service for the periods whose end plus the allowed
lateness has passed and publishes those not yet published. Replicas may all do it: a report's id names its
period and the first stored wins (store/reports.py), so each is published once. A failure (the database
down) is logged and tried again at the next check.
"""

from __future__ import annotations

import logging
import threading

from processors.indices.service import IndexService

log = logging.getLogger(__name__)


class ReportPublisher:
    def __init__(self, service: IndexService, interval_s: float) -> None:
        self._service = service
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="index-reports", daemon=True)
        self._thread.start()

    def check(self) -> list[str]:
        """One check: the ids of the reports it published."""
        try:
            return self._service.publish_due()
        except Exception:  # the next check tries again; one failure must not end the schedule
            log.exception("indices: publishing the reports due failed; trying again in %.0f s",
                          self._interval_s)
            return []

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self._interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
