"""Cases in the Kafka set-up: two api replicas read the violations topic the process role writes, and
between them apply each violation change to the cases once: one case for an overflowing bin, however
many replicas and whatever the processor replays, closed by the sensor when the bin is emptied.
Real processes, real Mosquitto, real Kafka-protocol broker (Tansu), one shared SQLite data directory.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from citywatch.mqtt_publisher import MqttPublisher
from core.settings import KafkaSettings
from tests.integration.kafka.test_api_alerts import dispatch_partitions, replay_violation_records
from tests.support.process import bins
from tests.support.roles import RoleProcess, kafka_config
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def reading(device_id: str, time_ms: int, fill_pct: float) -> bytes:
    return json.dumps({"device_id": device_id, "kind": "bin", "time": time_ms,
                       "attributes": {"fill_pct": fill_pct}}).encode()


def test_two_api_replicas_open_one_case_and_the_sensor_closes_it(
        kafka_settings: KafkaSettings, mosquitto_url: str, tmp_path: Path) -> None:
    # One data directory: one case store.
    config = kafka_config(kafka_settings, tmp_path, mosquitto_url, devices=bins("bin-a"), cases={
        "routes": [{"match": {"types": ["bin_overflow"]}, "department": "sanitation", "category": "0101"}]})
    roles = [RoleProcess(tmp_path, "process", config).start()]
    publisher = MqttPublisher(mosquitto_url, f"test-api-cases-{tmp_path.name}").connect()
    try:
        roles.append(RoleProcess(tmp_path, "ingest", config).start())
        api_a = RoleProcess(tmp_path, "api", config, name="api-a").start(wait_ready=False)
        api_b = RoleProcess(tmp_path, "api", config, name="api-b").start(wait_ready=False)
        roles += [api_a, api_b]
        wait_for(lambda: api_a.ready() and api_b.ready(), 30, 0.1, "both api replicas to be ready")
        wait_for(lambda: sorted(dispatch_partitions(api_a) + dispatch_partitions(api_b)) == [0, 1],
                 30, 0.2, "the api replicas to share the dispatch")

        def cases(api: RoleProcess, **query: Any) -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = api.get("/v1/cases", **query)["items"]
            return items

        now_ms = int(time.time() * 1000)
        for offset_ms, fill in ((0, 93.0), (1000, 97.0)):
            publisher.publish("citywatch/events/bin-a", reading("bin-a", now_ms + offset_ms, fill), wait=True)
        [case] = wait_for(lambda: cases(api_a), 30, 0.1, "a case for the overflow")
        assert (case["place"], case["department"], case["state"]) == ("bin-a", "sanitation", "registered")

        # The processor replays its batch: the opened change is on the topic twice; still one case.
        assert replay_violation_records(kafka_settings) == 1
        wait_for(lambda: sum(api.get("/v1/status")["alerts"]["dispatch_changes"] for api in (api_a, api_b))
                 == 2, 20, 0.2, "the replicas to read the replayed record")
        response = httpx.post(f"{api_b.base_url}/v1/cases/{case['case_id']}/transitions",
                              json={"to": "dispatched"}, timeout=10)
        assert response.status_code == 200, response.text

        publisher.publish("citywatch/events/bin-a", reading("bin-a", now_ms + 2000, 3.0), wait=True)
        [closed] = wait_for(lambda: cases(api_b, state="closed"), 30, 0.1, "the sensor to close the case")
        assert (closed["case_id"], closed["resolution"]) == (case["case_id"], "verified_by_sensor")
        assert [c["case_id"] for c in cases(api_a)] == [case["case_id"]]
        history = api_a.get(f"/v1/cases/{case['case_id']}")["history"]
        assert [(e["actor"], e["to_state"]) for e in history] == [
            ("routing", "registered"), ("anonymous", "dispatched"), ("sensor", "verified"),
            ("sensor", "closed")]
    finally:
        publisher.close()
        for role in reversed(roles):
            if role.process is not None:
                assert role.stop() == 0, role.log()


def _listen(base_url: str, into: list[tuple[str, dict[str, Any]]], connected: threading.Event) -> None:
    """The replica's SSE stream of case SLA events, collected until two have come."""
    try:
        with httpx.stream("GET", f"{base_url}/v1/stream/violations",
                          params={"events": ["case_sla_warning", "case_sla_breach"]},
                          timeout=httpx.Timeout(10, read=60)) as response:
            connected.set()
            event = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    into.append((event, json.loads(line[6:])))
                    if len(into) == 2:
                        return
    except httpx.HTTPError:
        return  # the replica stopped


def test_every_api_replica_streams_the_sla_events_of_a_case_made_through_another(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    """One replica claims and publishes each SLA event; the SSE clients of both see it, once."""
    config = kafka_config(kafka_settings, tmp_path, alerts={"stream_heartbeat_s": 0.5}, cases={
        "sla": {"calendars": {"always": {"around_the_clock": True}}, "calendar": "always",
                "warn_at": 0.5, "priorities": {"high": {"allowance_minutes": 0.1}}},  # six seconds
        "sla_check_interval_s": 0.3})
    roles: list[RoleProcess] = []
    try:
        api_a = RoleProcess(tmp_path, "api", config, name="api-a").start(wait_ready=False)
        api_b = RoleProcess(tmp_path, "api", config, name="api-b").start(wait_ready=False)
        roles += [api_a, api_b]
        wait_for(lambda: api_a.ready() and api_b.ready(), 30, 0.1, "both api replicas to be ready")
        streamed: list[list[tuple[str, dict[str, Any]]]] = [[], []]
        listeners = []
        for api, into in zip((api_a, api_b), streamed, strict=True):
            connected = threading.Event()
            listener = threading.Thread(target=_listen, args=(api.base_url, into, connected), daemon=True)
            listener.start()
            assert connected.wait(10), "the SSE stream did not open"
            listeners.append(listener)
        created = httpx.post(f"{api_a.base_url}/v1/cases", timeout=10, json={
            "type": "pothole", "description": "a hole at the school gate", "priority": "high"})
        assert created.status_code == 201, created.text
        case_id = created.json()["case_id"]
        for listener in listeners:
            listener.join(30)
        for into in streamed:
            assert [(event, message["change"], message["case"]["case_id"]) for event, message in into] == [
                ("case", "case_sla_warning", case_id), ("case", "case_sla_breach", case_id)]
    finally:
        for role in reversed(roles):
            if role.process is not None:
                assert role.stop() == 0, role.log()
