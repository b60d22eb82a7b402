"""An api replica dies (kill -9) or is stopped (SIGTERM) while violation changes flow into the cases, and
comes back: no violation is left without its case, none is in two, no place gets two open cases, and every
clearing reaches its case, which the sensors close.

Real processes (ingest, a processor, two api replicas), real Mosquitto, a real Kafka-protocol broker
(Tansu), the case store in one PostgreSQL that both replicas share.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from citywatch.mqtt_publisher import MqttPublisher
from core.settings import KafkaSettings, PostgresSettings
from tests.integration.kafka.test_api_alerts import dispatch_partitions
from tests.support.postgres import PASSWORD
from tests.support.process import bins
from tests.support.roles import RoleProcess, kafka_config, postgres_relational
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

BINS = [f"bin-{index:03d}" for index in range(30)]
# After the first overflow of every bin: emptied, filling, overflowing again (a new case each time,
# unless a late clearing lets the next overflow join the case still open).
CYCLE = (5.0, 40.0, 92.0, 96.0)
CYCLES = 8
# Readings per second: the stream lasts about 10 s, so it still flows when the replica is stopped, while
# its partition waits for the group to notice, and after the replica is back.
FEED_PER_SECOND = 100
DISPATCHED = set(BINS[::2])  # their first cases are dispatched: the sensors verify them


def reading(device_id: str, time_ms: int, fill_pct: float) -> bytes:
    return json.dumps({"device_id": device_id, "kind": "bin", "time": time_ms,
                       "attributes": {"fill_pct": fill_pct}}).encode()


class Feed:
    """Publishes bin readings to the ingest broker at a steady pace, on a thread of its own."""

    def __init__(self, publisher: MqttPublisher) -> None:
        self.publisher = publisher
        self.time_ms = int(time.time() * 1000)
        self.published = 0
        self.cycles_done = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def round(self, fills: tuple[float, ...]) -> None:
        """Each bin reports each fill, one event-time second apart."""
        for fill in fills:
            self.time_ms += 1000
            for device in BINS:
                self.publisher.publish(f"citywatch/events/{device}", reading(device, self.time_ms, fill),
                                       wait=True)
                self.published += 1

    def _run(self) -> None:
        started = time.monotonic()
        try:
            for _ in range(CYCLES):
                for fill in CYCLE:
                    self.round((fill,))
                    # Paces the stream (the roles read it as it comes): not a wait for a condition.
                    time.sleep(max(0.0, started + self.published / FEED_PER_SECOND - time.monotonic()))
                self.cycles_done += 1
        except BaseException as exc:
            self.error = exc


def overflow_violations(data_dir: Path) -> dict[str, tuple[str, str]]:
    """The processor's stored bin_overflow violations: id -> (bin, status)."""
    path = data_dir / "citywatch.sqlite3"
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT violation_id, device_id, status FROM violations "
                              "WHERE type = 'bin_overflow'").fetchall()
    except sqlite3.OperationalError:  # the schema is being created
        return {}
    return {row[0]: (row[1], row[2]) for row in rows}


def all_cases(api: RoleProcess) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = api.get("/v1/cases", type="bin_overflow", limit=1000, **({"cursor": cursor} if cursor else {}))
        cases.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return cases


def memberships(api: RoleProcess, cases: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each case's linked violations, from the case's detail."""
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        return {case["case_id"]: client.get(f"/v1/cases/{case['case_id']}").json()["violations"]
                for case in cases}


@contextmanager
def holding_the_cases_lock(postgres: PostgresSettings) -> Iterator[None]:
    """Hold the advisory lock every case transaction takes (store/relational.py), as a long transaction
    of another replica would."""
    with psycopg.connect(host=postgres.host, port=postgres.port, user=postgres.user, password=PASSWORD,
                         dbname=postgres.database) as connection:
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(b"citywatch:cases"),))
        yield
        connection.commit()


def change_counts(api: RoleProcess) -> dict[str, float]:
    lines = api.get_text("/metrics").splitlines()
    return {line.split('"')[1]: float(line.split()[-1]) for line in lines
            if line.startswith("citywatch_case_changes_total{")}


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_an_api_replica_stopped_mid_stream_loses_and_duplicates_no_case(
        kafka_settings: KafkaSettings, postgres: PostgresSettings, mosquitto_url: str, tmp_path: Path,
        how: str) -> None:
    data_dir = tmp_path / "data"
    config = {
        **kafka_config(kafka_settings, tmp_path, mosquitto_url),
        "relational": postgres_relational(postgres),
        "devices": bins(*BINS),
        "devices_file": None,
        "cases": {"routes": [{"match": {"types": ["bin_overflow"]}, "department": "sanitation",
                              "category": "0101"}]},
    }
    roles = [RoleProcess(tmp_path, role, config).start() for role in ("process", "ingest")]
    api_a = RoleProcess(tmp_path, "api", config, name="api-a").start(wait_ready=False)
    api_b = RoleProcess(tmp_path, "api", config, name="api-b").start(wait_ready=False)
    roles += [api_a, api_b]
    publisher = MqttPublisher(mosquitto_url, f"test-case-faults-{tmp_path.name}").connect()
    try:
        wait_for(lambda: api_a.ready() and api_b.ready(), 30, 0.1, "both api replicas to be ready")
        wait_for(lambda: sorted(dispatch_partitions(api_a) + dispatch_partitions(api_b)) == [0, 1],
                 30, 0.2, "the api replicas to share the dispatch")

        # Every bin overflows once; half of the cases are dispatched before the stream empties the bins.
        feed = Feed(publisher)
        codes_at_stop: list[int] = []
        feed.round((92.0, 96.0))
        first = wait_for(lambda: (lambda cases: cases if len(cases) == len(BINS) else None)(all_cases(api_b)),
                         30, 0.2, "a case for every bin")
        for case in first:
            if case["place"] in DISPATCHED:
                response = httpx.post(f"{api_a.base_url}/v1/cases/{case['case_id']}/transitions",
                                      json={"to": "dispatched", "assignee": "wang"}, timeout=10)
                assert response.status_code == 200, response.text

        feed.thread.start()
        wait_for(lambda: feed.cycles_done >= 2 or feed.error is not None, 30, 0.05, "two cycles published")
        # The case store is busy for a moment (another transaction holds the cases' lock): the replicas'
        # intakes fall behind, their readers wait with offsets uncommitted, and then one replica goes.
        with holding_the_cases_lock(postgres):
            target = feed.published + 2 * len(BINS)
            wait_for(lambda: feed.published >= target or feed.error is not None, 30, 0.05,
                     "changes to queue up behind the lock")
            if how == "kill -9":
                api_a.kill()
            else:
                stopping = threading.Thread(target=lambda: codes_at_stop.append(api_a.stop()), daemon=True)
                stopping.start()
                # SIGTERM: the replica tries to apply what it queued while the store is still busy.
                time.sleep(1.0)  # not a wait for a condition: how long the store stays busy meanwhile
        if how == "SIGTERM":
            stopping.join(60)
            assert codes_at_stop == [0], api_a.log()[-3000:]
        assert feed.cycles_done < CYCLES, "the stream ended before the replica was stopped"
        api_a.start(wait_ready=False)
        feed.thread.join(60)
        assert feed.error is None and feed.cycles_done == CYCLES, feed.error
        wait_for(api_a.ready, 30, 0.1, "api-a to be ready again")

        # What the processor judged: the first overflow and one per cycle for every bin, the last open.
        expected = wait_for(
            lambda: (lambda v: v if Counter(s for _, s in v.values()) == Counter(
                cleared=CYCLES * len(BINS), open=len(BINS)) else None)(overflow_violations(data_dir)),
            60, 0.2, "the processor to store every overflow")

        def settled() -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]] | None:
            cases = all_cases(api_b)
            members = memberships(api_b, cases)
            cleared = {m["violation_id"] for ms in members.values() for m in ms if m["cleared_time_ms"]}
            linked = [m["violation_id"] for ms in members.values() for m in ms]
            if set(linked) != set(expected) or cleared != {v for v, (_, s) in expected.items()
                                                           if s == "cleared"}:
                return None
            return cases, members

        cases, members = wait_for(settled, 60, 0.5, "every overflow and clearing to reach the cases")
        # Each violation is in exactly one case, of its own bin.
        linked = [m["violation_id"] for ms in members.values() for m in ms]
        assert len(linked) == len(set(linked)) == len(expected)
        by_id = {case["case_id"]: case for case in cases}
        for case_id, ms in members.items():
            assert {expected[m["violation_id"]][0] for m in ms} == {by_id[case_id]["place"]}
        # One open case per bin: the one of its last overflow; every other one closed by the sensors.
        still_open = [case for case in cases if case["state"] != "closed"]
        assert sorted(case["place"] for case in still_open) == BINS
        for case in still_open:
            assert case["state"] in ("registered", "dispatched") and case["open_violations"] == 1, case
            assert [expected[m["violation_id"]][1] for m in members[case["case_id"]]
                    if not m["cleared_time_ms"]] == ["open"]
        first_ids = {case["case_id"] for case in first}
        for case in cases:
            if case["state"] != "closed":
                continue
            dispatched = case["case_id"] in first_ids and case["place"] in DISPATCHED
            assert (case["resolution"], case["open_violations"]) == (
                "verified_by_sensor" if dispatched else "resolved_by_itself", 0), case
        history = api_b.get(f"/v1/cases/{next(c['case_id'] for c in first if c['place'] in DISPATCHED)}")
        assert [(e["actor"], e["to_state"]) for e in history["history"]] == [
            ("routing", "registered"), ("anonymous", "dispatched"), ("sensor", "verified"),
            ("sensor", "closed")]
        # The survivor applied what it took over without a failure (the restarted replica counts anew).
        assert set(change_counts(api_b)) <= {"applied"}, change_counts(api_b)
    finally:
        publisher.close()
        codes = {role.name: role.stop() for role in reversed(roles) if role.process is not None}
    assert set(codes.values()) == {0}, {role.name: role.log()[-2000:] for role in roles}
