"""Upgrading from the previous release: `citywatch up` started on the data directory that release wrote
keeps its readings, violations, dead letters, API keys, webhook subscriptions and devices.

tests/data/upgrade/v0.1.0/ was written by release 0.1.0's own code (make_release_data.py there says
how); this test runs the current release on a copy of it, as an operator upgrading in place would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.alerts.webhooks.store import WebhookStore
from ingest.device_admin import DeviceManager
from ingest.registry import DeviceRegistry
from tests.support.process import CitywatchProcess, free_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

RELEASES = Path(__file__).resolve().parents[1] / "data" / "upgrade"


@pytest.mark.parametrize("release", ["v0.1.0"])
def test_the_current_release_serves_what_the_previous_one_stored(tmp_path: Path, release: str) -> None:
    old = RELEASES / release
    expected: dict[str, Any] = json.loads((old / "expected.json").read_text())
    data_dir = tmp_path / "data"
    shutil.copytree(old, data_dir, ignore=shutil.ignore_patterns("expected.json"))
    config = {
        "api": {"auth": "required"},
        "mqtt": {"embedded_broker": "amqtt", "embedded_port": free_port()},
        "devices_file": None,
        # The release's readings lie further back than the default retention: keep them.
        "store": {"retention": {"raw_readings_days": 36500, "violations_days": 36500,
                                "dead_letters_days": 36500}},
    }
    app = CitywatchProcess(tmp_path, config)
    app.start(wait_ready=False)
    try:
        headers = {"Authorization": f"Bearer {expected['token']}"}  # the key the old release made

        def get(path: str, **params: Any) -> Any:
            response = httpx.get(app.base_url + path, params=params, headers=headers, timeout=10)
            assert response.status_code == 200, (path, response.text)
            return response.json()

        wait_for(app.ready, 30, 0.1, f"citywatch up on the {release} data (log: {app.log_path})")
        [violation] = get("/v1/violations")["items"]
        assert (violation["violation_id"], violation["status"]) == (expected["violation_id"], "open")
        assert violation["evidence"]["event_ids"] == ["e10", "e11"]
        events = get("/v1/events", device="bin-0001", limit=100)["items"]
        assert len(events) == expected["events"]
        assert get("/v1/readings/latest", kind="bin")["items"][0]["attributes"]["fill_pct"] == 91

        admin = httpx.post(app.base_url + "/v1/admin/keys", headers=headers, json={"name": "x", "scopes": []},
                           timeout=10)
        assert admin.status_code == 403  # the old key kept its scopes, no more
        assert app.log().count("Traceback") == 0, app.log()[-3000:]
    finally:
        assert app.stop() == 0

    # The stores the API reads only with other scopes: opened by the new code directly.
    webhooks = WebhookStore.in_directory(data_dir)
    try:
        subscription = webhooks.subscription(expected["subscription_id"])
        assert subscription is not None and subscription.enabled
        assert (subscription.secret, subscription.owner_key_id) == (expected["subscription_secret"],
                                                                    expected["key_id"])
    finally:
        webhooks.close()
    registry = DeviceRegistry()
    devices = DeviceManager.open(data_dir, registry, [])
    try:
        device = registry.get(expected["device_id"])
        assert device is not None and device.active
    finally:
        devices.close()
