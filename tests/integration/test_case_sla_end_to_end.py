"""A case breaches its SLA through the whole pipeline: a real Mosquitto, `citywatch up` as a process, a
webhook receiver and the SSE stream. A bin overflows, sanitation gets the case on a round-the-clock
calendar with a six-second allowance, nobody acts: the warning and the breach reach the receiver and the
stream once each, and the case escalates to its supervisor department."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from citywatch.mqtt_publisher import MqttPublisher
from tests.support.process import CitywatchProcess
from tests.support.servers import Receiver
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

CASE_EVENTS = ["case_sla_warning", "case_sla_breach"]
CASES = {
    "routes": [{"match": {"types": ["bin_overflow"]}, "department": "sanitation", "category": "0101",
                "priority": "high"}],
    "sla": {"calendars": {"always": {"around_the_clock": True}}, "calendar": "always", "warn_at": 0.5,
            "priorities": {"high": {"allowance_minutes": 0.1}}},  # six seconds, warned after three
    "departments": {"sanitation": {"supervisor": "city_inspection"}},
    "sla_check_interval_s": 0.3,
}


@pytest.fixture
def app(mosquitto_url: str, tmp_path: Path) -> Iterator[CitywatchProcess]:
    config = {"devices": [{"device_id": "bin-a", "kind": "bin", "lat": 22.54, "lon": 114.05,
                           "tags": {"grid": "FT-11", "district": "futian"}}],
              "pipeline": {"allowed_lateness_ms": 200}, "cases": CASES,
              "alerts": {"webhooks": {"allowed_private_networks": ["127.0.0.0/8"]}},  # the receiver is local
              "mqtt": {"url": mosquitto_url, "client_id": f"citywatch-{tmp_path.name}"}}
    process = CitywatchProcess(tmp_path, config).start()
    yield process
    process.kill()


def test_an_untouched_case_warns_breaches_and_escalates(app: CitywatchProcess, mosquitto_url: str,
                                                        receivers: list[Receiver]) -> None:
    receiver = Receiver().start()
    receivers.append(receiver)
    created = httpx.post(f"{app.base_url}/v1/subscriptions",
                         json={"url": receiver.url, "filter": {"events": CASE_EVENTS}}, timeout=10)
    assert created.status_code == 201, created.text
    streamed: list[tuple[str, dict[str, Any]]] = []

    def listen() -> None:
        with httpx.stream("GET", f"{app.base_url}/v1/stream/violations", params={"events": CASE_EVENTS},
                          timeout=60) as response:
            event = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    streamed.append((event, json.loads(line[6:])))
                    if len(streamed) == 2:
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(0.5)  # the stream is open before the first event
    publisher = MqttPublisher(mosquitto_url, f"test-sla-{app.port}").connect()
    try:
        now_ms = int(time.time() * 1000)
        for offset, fill in ((0, 95.0), (1000, 97.0), (2000, 98.0)):
            payload = {"device_id": "bin-a", "kind": "bin", "time": now_ms + offset,
                       "attributes": {"fill_pct": fill}}
            publisher.publish("citywatch/events/bin-a", json.dumps(payload).encode(), wait=True)
    finally:
        publisher.close()

    case = wait_for(lambda: next(iter(app.get("/v1/cases")["items"]), None), 20, message="the case")
    assert case["deadline_ms"] - case["created_time_ms"] == 6000
    assert case["warning_ms"] - case["created_time_ms"] == 3000

    deliveries = wait_for(lambda: receiver.received() if len(receiver.received()) >= 2 else None, 30,
                          message="the warning and the breach at the webhook")
    bodies = [delivery.json() for delivery in deliveries]
    assert [body["change"] for body in bodies] == CASE_EVENTS
    assert [d.headers.get("X-Citywatch-Event") for d in deliveries] == [f"case.{e}" for e in CASE_EVENTS]
    warning, breach = bodies
    assert warning["case"]["case_id"] == breach["case"]["case_id"] == case["case_id"]
    assert (warning["case"]["due_ms"], breach["case"]["due_ms"]) == (case["warning_ms"], case["deadline_ms"])
    assert breach["case"]["escalated_to"] == "city_inspection" and "violation" not in breach
    assert breach["idempotency_key"] == f"{case['case_id']}:case_sla_breach:{case['deadline_ms']}"

    wait_for(lambda: len(streamed) == 2 or None, 20, message="both events on the SSE stream")
    assert [(event, message["change"]) for event, message in streamed] == [
        ("case", change) for change in CASE_EVENTS]
    assert [message["idempotency_key"] for _, message in streamed] == [b["idempotency_key"] for b in bodies]

    detail = app.get(f"/v1/cases/{case['case_id']}")
    assert (detail["state"], detail["department"], detail["escalated_to"], detail["sla_status"]) == (
        "registered", "sanitation", "city_inspection", "overdue")
    escalation = detail["history"][-1]
    assert (escalation["actor"], escalation["department"], escalation["reason"]) == (
        "sla", "city_inspection", "sla_breach")
    time.sleep(1.0)  # more passes of the poller: nothing is sent again
    assert len(receiver.received()) == 2
    assert app.stop() == 0
