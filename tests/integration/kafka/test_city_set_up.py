"""The city set-up as on several hosts: ingest, two processors and two api replicas as separate processes,
each with a working directory of its own, joined only by the services a city runs (Mosquitto, Kafka,
InfluxDB for readings and violations, PostgreSQL for keys, webhooks and devices). No file written by one
role is read by another: the whole path works, including a device registered through one api replica
and judged by the processors and served by the other replica."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from citywatch.mqtt_publisher import MqttPublisher
from core.settings import KafkaSettings, PostgresSettings
from tests.support.influxdb import InfluxServer
from tests.support.process import REPO, bins
from tests.support.roles import RoleProcess, postgres_relational
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

ROLES = ("ingest", "process-1", "process-2", "api-a", "api-b")


def reading(device_id: str, time_ms: int, fill_pct: float) -> bytes:
    return json.dumps({"device_id": device_id, "kind": "bin", "time": time_ms,
                       "attributes": {"fill_pct": fill_pct}}).encode()


def files_under(directory: Path) -> set[str]:
    return {str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file()}


def test_ingest_two_processors_and_two_api_replicas_share_nothing_but_the_services(
        kafka_settings: KafkaSettings, mosquitto_url: str, influx_server: InfluxServer,
        postgres: PostgresSettings, tmp_path: Path) -> None:
    shared: dict[str, Any] = {
        "bus": {"kind": "kafka", "kafka": kafka_settings.model_dump(mode="json")},
        "mqtt": {"url": mosquitto_url, "client_id": f"citywatch-{uuid.uuid4().hex[:8]}"},
        "relational": postgres_relational(postgres),
        "api": {"auth": "required"},
        "devices": bins("bin-config"),
        "devices_file": None,
    }
    database = f"city_{uuid.uuid4().hex[:8]}"
    workdirs = {name: tmp_path / name for name in ROLES}
    configs = {name: {**shared, "store": {"kind": "influxdb", "data_dir": str(workdirs[name] / "data"),
                                          "influxdb": {"url": influx_server.url, "database": database}}}
               for name in ROLES}
    roles = {name: RoleProcess(workdirs[name], name.split("-")[0], configs[name], name=name)
             for name in ROLES}
    try:
        for role in roles.values():
            role.start(wait_ready=False)
        wait_for(lambda: all(role.ready() for role in roles.values()), 60, 0.2, "every role to be ready")
        api_a, api_b = roles["api-a"], roles["api-b"]
        created = subprocess.run(
            [sys.executable, "-m", "citywatch.cli", "keys", "--config", str(api_a.config_path), "create",
             "--name", "control-room", "--scopes", "admin"], cwd=REPO, check=True, capture_output=True,
            text=True, timeout=60).stdout
        token = created.split("token (shown once, only its hash is stored): ")[1].strip()
        admin = {"Authorization": f"Bearer {token}"}

        # A bin registered through replica B: ingest accepts it, the processors judge it, A serves it.
        registered = httpx.post(api_b.base_url + "/v1/devices", headers=admin, timeout=10, json={
            "device_id": "bin-new", "kind": "bin", "lat": 22.54, "lon": 114.05,
            "tags": {"grid": "FT-11", "district": "futian", "department": "sanitation"}})
        assert registered.status_code == 201, registered.text
        publisher = MqttPublisher(mosquitto_url, f"test-city-{uuid.uuid4().hex[:6]}").connect()
        try:
            def publish_overflows() -> None:
                now_ms = int(time.time() * 1000)
                for device in ("bin-config", "bin-new"):
                    for step, fill in enumerate((70.0, 93.0, 96.0)):
                        publisher.publish(f"citywatch/events/{device}", reading(device, now_ms + step, fill),
                                          wait=True)

            def judged(api: RoleProcess) -> set[str]:
                answer = httpx.get(api.base_url + "/v1/violations", headers=admin, timeout=10,
                                   params={"type": "bin_overflow"})
                assert answer.status_code == 200, answer.text
                return {v["device_id"] for v in answer.json()["items"]}

            # The device change reaches ingest over the devices topic within a poll; until then its
            # readings are dead-lettered as unknown_device, so publish again until both are judged.
            def both_judged() -> bool:
                publish_overflows()
                return judged(api_a) >= {"bin-config", "bin-new"}

            wait_for(both_judged, 60, 1.0, "overflows of both bins judged and served by api-a")
            assert judged(api_b) >= {"bin-config", "bin-new"}
        finally:
            publisher.close()
    finally:
        codes = {name: role.stop() for name, role in roles.items() if role.process is not None}
    assert codes == dict.fromkeys(ROLES, 0), {name: roles[name].log()[-2000:] for name in ROLES}
    # Nothing relational or time-series in any working directory: only what a role keeps for itself
    # (its configuration, its log, and at most a processor's empty write spool).
    for name in ROLES:
        kept = {f for f in files_under(workdirs[name]) if not f.endswith((".yaml", ".log"))}
        assert not {f for f in kept if f.endswith((".sqlite3", ".sqlite", ".lp"))}, (name, kept)
