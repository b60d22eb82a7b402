"""Builders for the alert tests: violations with tags, location and plates; an alert-enabled API."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.access.control import AccessControl
from api.access.keys import Scope
from api.alerts.webhooks.dispatcher import WebhookDispatcher
from api.alerts.webhooks.dispatcher_process import WebhookDispatcherProcess
from api.alerts.webhooks.store import WebhookStore
from api.app import create_app
from api.services import ApiServices
from api.violation_actions import ViolationActions
from core.case_settings import CaseSettings
from core.index_settings import IndexSettings
from core.ingest_config import GeoSettings
from core.metrics import Metrics
from core.models import Evidence, Location, Severity, Violation, ViolationStatus
from core.settings import AlertSettings, ApiSettings, AuthMode, RelationalSettings, Settings, WebhookSettings
from ingest.geo import GeoTagger
from processors.cases.routing import CaseRouter
from processors.cases.service import CaseService
from processors.indices.service import IndexService
from processors.outputs.feed import ViolationFeed
from store.cases import CaseStore
from store.open311 import Open311Store
from store.reports import ReportStore
from store.sqlite_store import SqliteStore
from tests.support.events import T0_MS
from tests.support.servers import Receiver
from tests.support.wait import wait_for


def violation(n: int, *, status: ViolationStatus = ViolationStatus.OPEN, type: str = "parking",
              grid: str = "FT-11", district: str = "futian", department: str = "traffic",
              severity: Severity = Severity.MEDIUM, device: str = "cam-1", lat: float = 22.54,
              lon: float = 114.05, plate: str | None = "粤B12345", updated_offset_ms: int = 0) -> Violation:
    return Violation(
        violation_id=f"v{n:04d}", type=type, severity=severity, device_id=device,
        start_time_ms=T0_MS + n * 1000, updated_time_ms=T0_MS + n * 1000 + updated_offset_ms, status=status,
        end_time_ms=None if status is ViolationStatus.OPEN else T0_MS + n * 1000 + updated_offset_ms,
        location=Location(lat=lat, lon=lon),
        evidence=Evidence(event_ids=[f"e{n}"], details={"dwell_s": 300},
                          snapshot_url=None if plate is None else f"https://evidence.example/{n}.jpg",
                          plate=plate),
        tags={"grid": grid, "district": district, "department": department})


@dataclass
class AlertApi:
    """An app with auth required, a feed, webhooks and a real SQLite store, for TestClient or uvicorn."""

    services: ApiServices
    feed: ViolationFeed
    access: AccessControl
    store: SqliteStore
    dispatcher: WebhookDispatcher
    app: Any
    cases: CaseService
    clients: list[TestClient] = field(default_factory=list)

    def key(self, *scopes: Scope, name: str = "test") -> str:
        assert self.access.keys is not None
        _, token = self.access.keys.create(name, frozenset(scopes))
        return token

    def client(self) -> TestClient:
        """A TestClient with the app's lifespan running (closed by `close`)."""
        client = TestClient(self.app)
        client.__enter__()
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.__exit__(None, None, None)
        self.clients.clear()
        self.dispatcher.stop()
        self.dispatcher.store.close()
        self.services.violation_actions.close()
        self.cases.store.close()  # also Open311's database
        if self.services.indices is not None and self.services.indices.reports is not None:
            self.services.indices.reports.close()
        self.access.close()
        self.store.close()


def alert_api(tmp_path: Path, *, webhooks: WebhookSettings | None = None, alerts: AlertSettings | None = None,
              api: ApiSettings | None = None, relational: RelationalSettings | None = None,
              cases: CaseSettings | None = None, geo: GeoSettings | None = None,
              sender_process: bool = False, dispatcher_process: bool = False) -> AlertApi:
    """`relational`: where keys, audit log, webhooks, people's actions on violations and cases live
    (default: SQLite files in `tmp_path`); `cases`: case routing (default: none, cases are only made
    through the API or `AlertApi.cases`); `geo`: the grids and departments Open311 requests are tagged
    with (default: none); `sender_process`: webhook requests made by a child process, as the api role
    makes them; `dispatcher_process`: the whole dispatcher in a child process, as `citywatch up` runs it."""
    api = api or ApiSettings(auth=AuthMode.REQUIRED, rate_limit_per_s=1000, rate_limit_burst=1000)
    alerts = alerts or AlertSettings(feed_retention=1000, stream_heartbeat_s=0.2)
    feed = ViolationFeed(alerts.feed_retention)
    relational = relational or RelationalSettings()
    access = AccessControl.in_directory(tmp_path, api, relational)
    store = SqliteStore.in_directory(tmp_path)
    webhook_store = WebhookStore.open(relational, tmp_path)
    dispatcher: WebhookDispatcher
    if dispatcher_process:
        settings = Settings(api=api, relational=relational,
                            alerts=alerts.model_copy(update={"webhooks": webhooks or alerts.webhooks}))
        dispatcher = WebhookDispatcherProcess(webhook_store, settings, feed, access, tmp_path)
    else:
        dispatcher = WebhookDispatcher(webhook_store, webhooks or alerts.webhooks, feed, access,
                                       sender_process=sender_process)
    dispatcher.start()
    case_service = CaseService(CaseStore.open(relational, tmp_path),
                               CaseRouter(cases or CaseSettings(), "Asia/Shanghai"))
    open311 = Open311Store.beside(case_service.store)
    services = ApiServices(store=store, metrics=Metrics(), settings=api, access=access, feed=feed,
                           webhooks=dispatcher, alerts=alerts,
                           violation_actions=ViolationActions.open(relational, tmp_path), cases=case_service,
                           open311=open311, geo=GeoTagger.from_settings(geo or GeoSettings()),
                           indices=IndexService(IndexSettings(), "Asia/Shanghai", store,
                                                reports=ReportStore.open(relational, tmp_path),
                                                cases=case_service.store))
    return AlertApi(services, feed, access, store, dispatcher, create_app(services), case_service)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def kill_sender_mid_request(api: AlertApi, receiver: Receiver) -> int:
    """Publishes v0001 to a subscription of `receiver` (which holds the first request), waits until its
    request reached the receiver and kills the process making the deliveries with SIGKILL; returns that
    process's id."""
    api.dispatcher.barrier()
    pid = api.dispatcher.sender_pid
    assert pid is not None
    api.feed.publish([violation(1)])
    wait_for(lambda: receiver.requests, message="the first request reached the receiver")
    os.kill(pid, signal.SIGKILL)
    return pid
