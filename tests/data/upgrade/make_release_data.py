"""Writes the data directory of a citywatch release, for the upgrade test (tests/integration/test_upgrade.py).

Run with the OLD release's code first on the path, from a checkout of that release:
    PYTHONPATH=/path/to/old-checkout python tests/data/upgrade/make_release_data.py OUT_DIR
It writes what `citywatch up` keeps in its data directory (readings, violations, a dead letter, an API
key, a webhook subscription, a device registered through the API) and `expected.json`: what the new
release must still find there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from api.access.control import AccessControl
from api.access.keys import Scope
from api.alerts.filters import ViolationFilter
from api.alerts.webhooks.store import WebhookStore
from core.models import DeadLetter, Event, Location, Severity, Violation, ViolationStatus
from core.settings import ApiSettings, AuthMode, DeviceSettings
from ingest.device_admin import DeviceManager
from ingest.registry import DeviceRegistry
from store.sqlite_store import SqliteStore

T0 = 1_795_669_200_000


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    store = SqliteStore.in_directory(out)
    events = [Event(event_id=f"e{n}", device_id="bin-0001", kind="bin", event_time_ms=T0 + n * 60_000,
                    ingest_time_ms=T0 + n * 60_000, attributes={"fill_pct": 80 + n},
                    location=Location(lat=22.54, lon=114.05), tags={"grid": "FT-11", "district": "futian"})
              for n in range(12)]
    store.write_events(events)
    store.write_violations([Violation(
        violation_id="v-overflow-1", type="bin_overflow", severity=Severity.HIGH, device_id="bin-0001",
        status=ViolationStatus.OPEN, start_time_ms=T0 + 600_000, updated_time_ms=T0 + 660_000,
        location=Location(lat=22.54, lon=114.05), tags={"grid": "FT-11", "district": "futian"},
        evidence={"event_ids": ["e10", "e11"], "fill_pct": 91})])
    store.write_dead_letters([DeadLetter(reason="malformed_json", detail="payload: not JSON",
                                         topic="citywatch/events/bin-0001", payload=b"{not json",
                                         received_time_ms=T0, source="native")])
    store.flush()
    store.close()

    access = AccessControl.in_directory(out, ApiSettings(auth=AuthMode.REQUIRED))
    assert access.keys is not None
    key, token = access.keys.create("dispatch", frozenset({Scope.VIOLATIONS_READ, Scope.READINGS_READ}))
    webhooks = WebhookStore.in_directory(out)
    subscription = webhooks.create_subscription(
        url="https://receiver.example/hook", filter=ViolationFilter(type=("bin_overflow",)), secret=None,
        description="sanitation dispatch", owner_key_id=key.key_id, plates=False)
    webhooks.close()
    devices = DeviceManager.open(out, DeviceRegistry(), [])
    devices.create(DeviceSettings(device_id="bin-api-1", kind="bin", lat=22.55, lon=114.06))
    devices.close()

    (out / "expected.json").write_text(json.dumps({
        "token": token, "key_id": key.key_id, "events": len(events), "violation_id": "v-overflow-1",
        "subscription_id": subscription.subscription_id, "subscription_secret": subscription.secret,
        "device_id": "bin-api-1"}, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
