"""A violation's lifecycle in both stores (embedded SQLite and a real InfluxDB): when the rule opened it is
kept through clearing, and every state change the rule made is kept once, however often it is replayed."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.services import ApiServices
from core.metrics import Metrics
from core.models import (
    Evidence,
    LifecycleChange,
    LifecycleEntry,
    Severity,
    Violation,
    ViolationStatus,
)
from processors.rule import Emitter
from tests.support.influxdb import InfluxServer
from tests.support.stores import open_store, settle

pytestmark = pytest.mark.integration

T0 = 1_795_600_000_000


def lifecycle(violation_id: str = "v-speed", type_: str = "speeding") -> list[Violation]:
    """Opened at T0, re-issued at a higher band at T0+5 s, cleared at T0+60 s; stamped as the engine
    stamps what a rule emits."""
    first = Violation(violation_id=violation_id, type=type_, severity=Severity.MEDIUM, device_id="cam-1",
                      start_time_ms=T0 - 2_000, updated_time_ms=T0, evidence=Evidence(event_ids=["e1"]))
    out = Emitter()
    out.violation(first)
    higher = msgspec.structs.replace(first, severity=Severity.HIGH, updated_time_ms=T0 + 5_000,
                                     evidence=Evidence(event_ids=["e1", "e2"]))
    out.violation(higher)
    out.violation(msgspec.structs.replace(higher, status=ViolationStatus.CLEARED, end_time_ms=T0 + 59_000,
                                          updated_time_ms=T0 + 60_000))
    return out.violations


@pytest.mark.parametrize("kind", ["embedded", "influxdb"])
def test_detection_time_is_kept_through_clearing_and_each_change_is_kept_once(
    kind: str, tmp_path: Path, influx_server: InfluxServer
) -> None:
    opened, updated, cleared = lifecycle()
    other = lifecycle("v-other", "red_light")[0]
    store = open_store(kind, tmp_path, influx_server)
    try:
        store.write_violations([opened])
        settle(store)
        assert store.get_violation("v-speed") == opened
        assert opened.detected_time_ms == T0
        store.write_violations([updated, other])
        store.write_violations([cleared])
        # A replay delivers every state again, out of order: nothing is added, nothing reopens.
        store.write_violations([cleared, opened, updated])
        settle(store)

        got = store.get_violation("v-speed")
        assert got is not None
        assert (got.status, got.start_time_ms, got.detected_time_ms, got.updated_time_ms) == (
            ViolationStatus.CLEARED, T0 - 2_000, T0, T0 + 60_000)
        assert store.violation_history("v-speed") == [
            LifecycleEntry(violation_id="v-speed", change=LifecycleChange.OPENED, time_ms=T0,
                           actor="rule:speeding"),
            LifecycleEntry(violation_id="v-speed", change=LifecycleChange.UPDATED, time_ms=T0 + 5_000,
                           actor="rule:speeding"),
            LifecycleEntry(violation_id="v-speed", change=LifecycleChange.CLEARED, time_ms=T0 + 60_000,
                           actor="rule:speeding"),
        ]
        assert [entry.change for entry in store.violation_history("v-other")] == [LifecycleChange.OPENED]
        assert store.violation_history("no-such-violation") == []
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["embedded", "influxdb"])
def test_an_instantaneous_violation_opened_and_cleared_at_one_time_lists_opened_first(
    kind: str, tmp_path: Path, influx_server: InfluxServer
) -> None:
    opened = lifecycle("v-flash")[0]
    cleared = msgspec.structs.replace(opened, status=ViolationStatus.CLEARED, end_time_ms=T0)
    store = open_store(kind, tmp_path, influx_server)
    try:
        store.write_violations([cleared, opened])  # the cleared state first, in one batch
        settle(store)
        assert [entry.change for entry in store.violation_history("v-flash")] == [
            LifecycleChange.OPENED, LifecycleChange.CLEARED]
        got = store.get_violation("v-flash")
        assert got is not None and got.status is ViolationStatus.CLEARED and got.detected_time_ms == T0
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["embedded", "influxdb"])
def test_the_api_merges_the_stores_history_with_peoples_actions(
    kind: str, tmp_path: Path, influx_server: InfluxServer
) -> None:
    opened, updated, cleared = lifecycle()
    store = open_store(kind, tmp_path, influx_server)
    services = ApiServices(store=store, metrics=Metrics())  # auth disabled: actions by key:anonymous
    try:
        store.write_violations([opened, updated])
        settle(store)
        with TestClient(create_app(services)) as http:
            assert http.post("/v1/violations/v-speed/actions",
                             json={"action": "assign", "assignee": "traffic-police"}).status_code == 201
            store.write_violations([cleared])
            settle(store)
            shown = http.get("/v1/violations/v-speed").json()
            assert (shown["status"], shown["detected_time_ms"]) == ("cleared", T0)
            assert shown["handling"]["assignee"] == "traffic-police"
            entries = http.get("/v1/violations/v-speed/history").json()["entries"]
        # The rule's changes carry their (old) event times, so they come before the wall-clock action.
        assert [(e["change"], e["actor"]) for e in entries] == [
            ("opened", "rule:speeding"), ("updated", "rule:speeding"), ("cleared", "rule:speeding"),
            ("assigned", "key:anonymous")]
        assert entries[3]["actor_name"] == "auth disabled"
    finally:
        services.violation_actions.close()
        store.close()
