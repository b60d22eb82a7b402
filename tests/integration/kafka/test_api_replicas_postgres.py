"""Two api role replicas as on two hosts: each with a data directory of its own, the relational state in
one PostgreSQL. A key made with `citywatch keys create` or through either replica works on both, a
revocation reaches the other within the key cache's TTL, and subscriptions and devices are shared."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.access.keys import CACHE_TTL_S
from core.settings import KafkaSettings, PostgresSettings
from tests.support.process import REPO, bins
from tests.support.roles import RoleProcess, postgres_relational
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

RELATIONAL_FILES = ("access.sqlite3", "webhooks.sqlite3", "devices.sqlite", "violation_actions.sqlite3",
                    "cases.sqlite3")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_api_replicas_with_their_own_disks_share_keys_subscriptions_and_devices(
        kafka_settings: KafkaSettings, postgres: PostgresSettings, tmp_path: Path) -> None:
    shared: dict[str, Any] = {
        "bus": {"kind": "kafka", "kafka": kafka_settings.model_dump(mode="json")},
        "relational": postgres_relational(postgres),
        "api": {"auth": "required"},
        "devices": bins("bin-config"),
        # The subscription's receiver is never sent anything here: a local address, allowed.
        "alerts": {"webhooks": {"allowed_private_networks": ["127.0.0.0/8"]}},
    }
    configs = {name: {**shared, "store": {"data_dir": str(tmp_path / name)}} for name in ("a", "b")}
    api_a = RoleProcess(tmp_path, "api", configs["a"], name="api-a").start(wait_ready=False)
    api_b = RoleProcess(tmp_path, "api", configs["b"], name="api-b").start(wait_ready=False)
    try:
        wait_for(lambda: api_a.ready() and api_b.ready(), 30, 0.1, "both api replicas to be ready")
        created = subprocess.run(
            [sys.executable, "-m", "citywatch.cli", "keys", "--config", str(api_a.config_path), "create",
             "--name", "first-admin", "--scopes", "admin"], cwd=REPO, check=True, capture_output=True,
            text=True, timeout=60).stdout
        admin = bearer(created.split("token (shown once, only its hash is stored): ")[1].strip())
        for api in (api_a, api_b):
            assert httpx.get(api.base_url + "/v1/admin/keys", headers=admin, timeout=10).status_code == 200

        # A key made through A works on B at once.
        key = httpx.post(api_a.base_url + "/v1/admin/keys", headers=admin, timeout=10,
                         json={"name": "dispatch", "scopes": ["subscriptions:manage"]}).json()
        dispatch = bearer(key["token"])
        subscription = httpx.post(api_b.base_url + "/v1/subscriptions", headers=dispatch, timeout=10,
                                  json={"url": "http://127.0.0.1:9/city"})
        assert subscription.status_code == 201, subscription.text
        listed = httpx.get(api_a.base_url + "/v1/subscriptions", headers=dispatch, timeout=10).json()
        assert [s["subscription_id"] for s in listed] == [subscription.json()["subscription_id"]]

        # A device registered through B: listed by A (from the devices topic, and in the shared table).
        device = httpx.post(api_b.base_url + "/v1/devices", headers=admin, timeout=10,
                            json={"device_id": "bin-new", "kind": "bin", "lat": 22.54, "lon": 114.05})
        assert device.status_code == 201, device.text
        wait_for(lambda: httpx.get(api_a.base_url + "/v1/devices/bin-new", headers=admin,
                                   timeout=10).status_code == 200, 10, 0.1, "api-a to list the new device")

        # A case made through B is moved through A: one case table.
        case_key = httpx.post(api_a.base_url + "/v1/admin/keys", headers=admin, timeout=10,
                              json={"name": "dispatcher", "scopes": ["cases:read", "cases:write"]}).json()
        dispatcher = bearer(case_key["token"])
        made = httpx.post(api_b.base_url + "/v1/cases", headers=dispatcher, timeout=10,
                          json={"type": "pothole", "description": "Shennan Rd, bike lane"})
        assert made.status_code == 201, made.text
        moved = httpx.post(api_a.base_url + f"/v1/cases/{made.json()['case_id']}/transitions",
                           headers=dispatcher, timeout=10, json={"to": "dispatched", "department": "roads"})
        assert moved.status_code == 200, moved.text
        assert [e["to_state"] for e in moved.json()["history"]] == ["registered", "dispatched"]

        # Revoked through A: refused by A at once, by B once its cached copy is older than the TTL.
        assert httpx.delete(api_a.base_url + f"/v1/admin/keys/{key['key_id']}", headers=admin,
                            timeout=10).status_code == 204
        refused = httpx.get(api_a.base_url + "/v1/subscriptions", headers=dispatch, timeout=10)
        assert refused.status_code == 401 and refused.json()["detail"] == "the API key is unknown or revoked"
        wait_for(lambda: httpx.get(api_b.base_url + "/v1/subscriptions", headers=dispatch,
                                   timeout=10).status_code == 401, CACHE_TTL_S + 5, 0.2,
                 "api-b to refuse the revoked key")
    finally:
        for api in (api_a, api_b):
            if api.process is not None:
                assert api.stop() == 0, api.log()
    for name in ("a", "b"):
        assert [f for f in RELATIONAL_FILES if (tmp_path / name / f).exists()] == []
