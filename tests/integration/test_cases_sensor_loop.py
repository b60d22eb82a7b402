"""The sensor loop of cases beyond bins, through the whole pipeline: a real Mosquitto, `citywatch up` as a
process, real SQLite and HTTP.

A car parks on a sidewalk a camera watches: the illegal-parking violation opens a case for the traffic
police, an officer takes it, and when the camera sees the car leave the case is verified and closed by
the sensor. A river probe reads black-odorous water: the case goes to the water department, and only the
rule's third clean reading in a row closes it. Each case's whole history is read back through the API.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.intersection_feed import CAMERA, scenario_config
from citywatch.mqtt_publisher import MqttPublisher
from tests.support.process import CitywatchProcess
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

PROBE = "probe-river-1"
CASES = {"routes": [
    {"match": {"types": ["illegal_parking"]}, "department": "traffic_police", "category": "0301"},
    {"match": {"types": ["water_black_odour"]}, "department": "water", "category": "0201",
     "priority": "high"},
]}
# Readings of the black-odour guideline's bands (docs/rules-sanitation.md): heavily black-odorous, clean.
BLACK = {"transparency_cm": 8, "do_mgl": 0.1, "orp_mv": -100, "nh3n_mgl": 9}
CLEAN = {"transparency_cm": 60, "do_mgl": 6.5, "orp_mv": 180, "nh3n_mgl": 0.5}


@pytest.fixture
def app(mosquitto_url: str, tmp_path: Path) -> Iterator[CitywatchProcess]:
    traffic = scenario_config()
    probe = {"device_id": PROBE, "kind": "water", "lat": 22.53, "lon": 114.06,
             "tags": {"grid": "FT-31", "district": "futian", "department": "water",
                      "water_body": "futian-river"}}
    config = {**traffic, "devices": [*traffic["devices"], probe], "cases": CASES,
              "pipeline": {"allowed_lateness_ms": 200},
              "mqtt": {"url": mosquitto_url, "client_id": f"citywatch-{tmp_path.name}"}}
    process = CitywatchProcess(tmp_path, config).start()
    yield process
    process.kill()


@pytest.fixture
def publisher(app: CitywatchProcess, mosquitto_url: str) -> Iterator[MqttPublisher]:
    client = MqttPublisher(mosquitto_url, f"test-case-loop-{app.port}").connect()
    yield client
    client.close()


def send(publisher: MqttPublisher, device_id: str, kind: str, time_ms: int, **attributes: Any) -> None:
    payload = json.dumps({"device_id": device_id, "kind": kind, "time": time_ms, "attributes": attributes},
                         ensure_ascii=False).encode()
    publisher.publish(f"citywatch/events/{device_id}", payload, wait=True)


def move(app: CitywatchProcess, case_id: str, to: str, **fields: str) -> dict[str, Any]:
    response = httpx.post(f"{app.base_url}/v1/cases/{case_id}/transitions", json={"to": to, **fields},
                          timeout=10)
    assert response.status_code == 200, response.text
    case: dict[str, Any] = response.json()
    return case


def only_case(app: CitywatchProcess, case_type: str, **query: Any) -> dict[str, Any] | None:
    items = app.get("/v1/cases", type=case_type, **query)["items"]
    assert len(items) <= 1, items
    return items[0] if items else None


def test_an_illegally_parked_car_is_a_traffic_case_the_camera_closes_when_it_leaves(
        app: CitywatchProcess, publisher: MqttPublisher) -> None:
    # Event time runs ahead of the wall clock here: the dwell limit (300 s) is reached by the messages'
    # own times, as the camera would report them over five minutes.
    start_ms = int(time.time() * 1000) - 600_000

    def car(at_s: float, **track: Any) -> None:
        send(publisher, CAMERA, "track", start_ms + int(at_s * 1000), track_id="car-7", label="car",
             **{"stage": "update", "zones": ["sidewalk_ne"], "stationary": True, "plate": "粤B66K21",
                **track})

    car(0, stage="new")
    car(120)
    car(310)  # parked for more than the dwell limit: the violation opens, and with it the case
    case = wait_for(lambda: only_case(app, "illegal_parking"), 20, message="a case for the parked car")
    assert (case["state"], case["department"], case["category"], case["place"], case["verify"]) == (
        "registered", "traffic_police", "0301", CAMERA, "sensor")
    assert (case["grid"], case["district"], case["open_violations"]) == ("FT-24", "futian", 1)

    move(app, case["case_id"], "dispatched", assignee="officer-li", note="patrol 2")
    move(app, case["case_id"], "accepted")
    car(330)  # still there: the case stays with the officer
    car(400, zones=[])  # the car left the sidewalk
    closed = wait_for(lambda: only_case(app, "illegal_parking", state="closed"), 20,
                      message="the camera to close the case")
    assert (closed["case_id"], closed["resolution"], closed["assignee"], closed["open_violations"]) == (
        case["case_id"], "verified_by_sensor", "officer-li", 0)

    detail = app.get(f"/v1/cases/{case['case_id']}")
    assert [(e["actor"], e["from_state"], e["to_state"]) for e in detail["history"]] == [
        ("routing", None, "registered"), ("anonymous", "registered", "dispatched"),
        ("anonymous", "dispatched", "accepted"), ("sensor", "accepted", "verified"),
        ("sensor", "verified", "closed")]
    assert detail["history"][1]["note"] == "patrol 2"
    [member] = detail["violations"]
    violation = member["violation"]
    assert member["cleared_time_ms"] is not None
    assert (violation["type"], violation["status"], violation["evidence"]["plate"]) == (
        "illegal_parking", "cleared", "粤B66K21")
    assert violation["evidence"]["details"]["cleared_because"] == "left_zone"
    assert violation["end_time_ms"] == start_ms + 400_000
    assert app.stop() == 0


def test_black_odorous_water_is_closed_after_the_rules_clean_readings(
        app: CitywatchProcess, publisher: MqttPublisher) -> None:
    now_ms = int(time.time() * 1000)
    minute_ms = 60_000
    step = 0

    def probe(values: dict[str, float]) -> None:
        nonlocal step
        step += 1
        # Slight differences between readings, as a working probe's: no reading is a stuck repeat.
        send(publisher, PROBE, "water", now_ms + step * minute_ms,
             **{name: value + step * 0.01 for name, value in values.items()})

    for _ in range(3):
        probe(BLACK)
    case = wait_for(lambda: only_case(app, "water_black_odour"), 20, message="a case for the river")
    assert (case["state"], case["department"], case["priority"], case["place"], case["verify"]) == (
        "registered", "water", "high", PROBE, "sensor")
    move(app, case["case_id"], "dispatched")
    move(app, case["case_id"], "accepted", assignee="team-3")
    move(app, case["case_id"], "in_progress", note="aerators on")

    probe(CLEAN)
    probe(CLEAN)
    # Two clean readings are not yet the rule's run of three: the water is still judged black-odorous.
    probe(BLACK)
    probe(CLEAN)
    probe(CLEAN)
    wait_for(lambda: len(app.get("/v1/events", device=PROBE)["items"]) == step, 10,
             message="every reading judged and stored")
    [violation] = app.get("/v1/violations", type="water_black_odour")["items"]
    assert violation["status"] == "open"
    still = only_case(app, "water_black_odour")
    assert still is not None and (still["state"], still["open_violations"]) == ("in_progress", 1)
    probe(CLEAN)  # the third clean reading in a row
    closed = wait_for(lambda: only_case(app, "water_black_odour", state="closed"), 20,
                      message="the probe to close the case")
    assert (closed["case_id"], closed["resolution"], closed["department"]) == (
        case["case_id"], "verified_by_sensor", "water")

    detail = app.get(f"/v1/cases/{case['case_id']}")
    assert [(e["actor"], e["to_state"]) for e in detail["history"]] == [
        ("routing", "registered"), ("anonymous", "dispatched"), ("anonymous", "accepted"),
        ("anonymous", "in_progress"), ("sensor", "verified"), ("sensor", "closed")]
    [member] = detail["violations"]
    assert member["violation"]["status"] == "cleared"
    assert member["violation"]["end_time_ms"] > now_ms + 6 * minute_ms  # not at the first clean run
    assert app.stop() == 0
