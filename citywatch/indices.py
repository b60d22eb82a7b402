"""The indices of a running instance (docs/indices.md): the service behind /v1/indices, /v1/rankings and
/v1/reports over the event store and the case store, its report database, and the scheduled publisher
that the api role and `citywatch up` run."""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings
from processors.indices.publisher import ReportPublisher
from processors.indices.service import IndexService
from store.base import Store
from store.cases import CaseStore
from store.reports import ReportStore


class IndexComponents:
    def __init__(self, settings: Settings, store: Store, cases: CaseStore | None) -> None:
        self.reports = ReportStore.open(settings.relational, Path(settings.store.data_dir))
        self.service = IndexService(settings.indices, settings.traffic.time_zone, store,
                                    reports=self.reports, cases=cases)
        reports = settings.indices.reports
        self.publisher = (ReportPublisher(self.service, reports.check_interval_s)
                          if reports.auto_publish and reports.periods else None)

    def start(self) -> None:
        if self.publisher is not None:
            self.publisher.start()

    def stop(self) -> None:
        if self.publisher is not None:
            self.publisher.stop()
        self.reports.close()
