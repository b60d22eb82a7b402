"""Dispatch plans across two api role replicas of the Kafka set-up, as on two hosts: data directories of
their own, the plans in the PostgreSQL database they share. A plan made through one is read and
re-planned through the other, and neither keeps a dispatch file on its disk (docs/dispatch.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import KafkaSettings, PostgresSettings
from tests.support.dispatch import EARLY_PLAN, ONE_TRUCK_CONFIG
from tests.support.process import REPO
from tests.support.roles import RoleProcess, postgres_relational
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration



def test_a_plan_made_through_one_api_replica_is_replanned_through_another(
        kafka_settings: KafkaSettings, postgres: PostgresSettings, tmp_path: Path) -> None:
    shared: dict[str, Any] = {
        "bus": {"kind": "kafka", "kafka": kafka_settings.model_dump(mode="json")},
        "relational": postgres_relational(postgres),
        "api": {"auth": "required"},
        "dispatch": ONE_TRUCK_CONFIG,
    }
    configs = {name: {**shared, "store": {"data_dir": str(tmp_path / name)}} for name in ("a", "b")}
    api_a = RoleProcess(tmp_path, "api", configs["a"], name="api-a").start(wait_ready=False)
    api_b = RoleProcess(tmp_path, "api", configs["b"], name="api-b").start(wait_ready=False)
    try:
        wait_for(lambda: api_a.ready() and api_b.ready(), 30, 0.1, "both api replicas to be ready")
        created = subprocess.run(
            [sys.executable, "-m", "citywatch.cli", "keys", "--config", str(api_a.config_path), "create",
             "--name", "depot", "--scopes", "dispatch:write,readings:read"], cwd=REPO, check=True,
            capture_output=True, text=True, timeout=60).stdout
        token = created.split("token (shown once, only its hash is stored): ")[1].strip()
        depot = {"Authorization": f"Bearer {token}"}
        made = httpx.post(api_a.base_url + "/v1/dispatch/plans", headers=depot, timeout=30,
                          json={"depot_id": "futian", "shift_id": "early", "date": "2026-12-07"})
        assert made.status_code == 201, made.text
        assert httpx.get(api_b.base_url + EARLY_PLAN, headers=depot, timeout=10).json() == made.json()
        replanned = httpx.post(api_b.base_url + EARLY_PLAN + "/replan", headers=depot, timeout=30)
        assert replanned.status_code == 200 and replanned.json()["revision"] == 2
        assert httpx.get(api_a.base_url + EARLY_PLAN, headers=depot, timeout=10).json() == replanned.json()
    finally:
        for api in (api_a, api_b):
            if api.process is not None:
                assert api.stop() == 0, api.log()
    assert [name for name in ("a", "b") if (tmp_path / name / "dispatch.sqlite3").exists()] == []
