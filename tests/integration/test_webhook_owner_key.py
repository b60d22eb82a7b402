"""A subscription follows the key that created it: revoked, the key's subscriptions stop delivering at once
and say why; narrowed (the plates scope taken away), the next delivery is masked and nothing more is
audited under it. Real receivers, the production dispatcher and key store, revocation through the API.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.access.keys import Scope
from api.alerts.webhooks.store import DeliveryStatus
from core.settings import WebhookSettings
from tests.support.alerts import AlertApi, alert_api, bearer, violation
from tests.support.servers import Receiver
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

FAST = WebhookSettings(max_attempts=1000, backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=2.0,
                       disable_after_failures=10_000, allowed_private_networks=("127.0.0.0/8",))


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[AlertApi, TestClient, Receiver]]:
    api = alert_api(tmp_path, webhooks=FAST)
    receiver = Receiver().start()
    yield api, api.client(), receiver
    receiver.stop()
    api.close()


def key_id(token: str) -> str:
    return token.split("_")[1]  # cw_<key id>_<secret>


def subscription(client: TestClient, sid: str, admin: dict[str, str]) -> dict[str, Any]:
    response = client.get(f"/v1/subscriptions/{sid}", headers=admin)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def test_a_revoked_key_s_subscription_stops_delivering_and_is_marked(setup) -> None:
    api, client, receiver = setup
    owner = api.key(Scope.SUBSCRIPTIONS_MANAGE)
    admin = bearer(api.key(Scope.ADMIN))
    sid = client.post("/v1/subscriptions", json={"url": receiver.url},
                      headers=bearer(owner)).json()["subscription_id"]
    api.feed.publish([violation(1)])
    wait_for(lambda: len(receiver.received()) == 1, message="the delivery before the revocation")

    assert client.delete(f"/v1/admin/keys/{key_id(owner)}", headers=admin).status_code == 204
    api.feed.publish([violation(2)])
    api.dispatcher.barrier()
    marked = subscription(client, sid, admin)
    assert marked["enabled"] is False
    assert marked["disabled_reason"] == f"the API key {key_id(owner)} that owns this subscription was revoked"
    assert [d.idempotency_key.split(":")[0] for d in api.dispatcher.store.deliveries(sid)] == ["v0001"]
    assert len(receiver.received()) == 1

    again = client.patch(f"/v1/subscriptions/{sid}", json={"enabled": True}, headers=admin)
    assert again.status_code == 409 and "was revoked" in again.json()["detail"]


def test_a_delivery_still_retrying_when_its_key_is_revoked_is_dead_lettered_with_the_reason(setup) -> None:
    api, client, receiver = setup
    receiver.status_for = lambda n: 503
    owner = api.key(Scope.SUBSCRIPTIONS_MANAGE)
    admin = bearer(api.key(Scope.ADMIN))
    sid = client.post("/v1/subscriptions", json={"url": receiver.url},
                      headers=bearer(owner)).json()["subscription_id"]
    api.feed.publish([violation(1)])
    wait_for(lambda: len(receiver.received()) >= 2, message="failed attempts")

    assert client.delete(f"/v1/admin/keys/{key_id(owner)}", headers=admin).status_code == 204
    [dead] = wait_for(lambda: api.dispatcher.store.deliveries(sid, status=DeliveryStatus.DEAD),
                      message="the retrying delivery dead-lettered")
    assert dead.last_error == f"the API key {key_id(owner)} that owns this subscription was revoked"
    assert subscription(client, sid, admin)["enabled"] is False


def test_a_key_that_lost_the_plates_scope_gets_masked_deliveries_from_the_next_one_on(setup,
                                                                                        tmp_path) -> None:
    api, client, receiver = setup
    owner = api.key(Scope.SUBSCRIPTIONS_MANAGE, Scope.PLATES)
    admin = bearer(api.key(Scope.ADMIN))
    created = client.post("/v1/subscriptions", json={"url": receiver.url}, headers=bearer(owner)).json()
    assert created["plates"] is True
    api.feed.publish([violation(1)])
    [first] = wait_for(receiver.received, message="the unmasked delivery")
    assert first.json()["violation"]["evidence"]["plate"] == "粤B12345"

    # Narrowed by an administrator in the key table (the key store has no scope change of its own yet).
    with sqlite3.connect(tmp_path / "access.sqlite3") as keys:
        keys.execute("UPDATE api_keys SET scopes = ? WHERE key_id = ?",
                     (Scope.SUBSCRIPTIONS_MANAGE.value, key_id(owner)))
    api.feed.publish([violation(2)])
    second = wait_for(lambda: receiver.received()[1:], message="the next delivery")[0].json()
    assert second["violation"]["violation_id"] == "v0002"
    assert second["violation"]["evidence"]["plate"] == "粤B1****"
    assert second["violation"]["evidence"]["snapshot_url"] is None
    assert subscription(client, created["subscription_id"], admin)["plates"] is False

    audit = client.get("/v1/admin/audit", params={"key_id": key_id(owner)}, headers=admin).json()
    assert [record["what"] for record in audit] == ["plates/evidence of violation v0001"]


def test_a_sequence_audits_the_deliveries_it_sent_and_no_others(tmp_path: Path) -> None:
    """Changes queued together go to the sender as one sequence, which stops at the first failure: what it
    did not send is neither audited nor counted until it is sent."""
    api = alert_api(tmp_path, webhooks=FAST)
    receiver = Receiver(status_for=lambda n: 500 if n == 1 else 204).start()
    try:
        client = api.client()
        owner = api.key(Scope.SUBSCRIPTIONS_MANAGE, Scope.PLATES)
        admin = bearer(api.key(Scope.ADMIN))
        client.post("/v1/subscriptions", json={"url": receiver.url}, headers=bearer(owner))
        api.feed.publish([violation(1), violation(2), violation(3)])
        wait_for(lambda: len(receiver.received()) == 4, message="three deliveries, one of them twice")
        sent = [request.json()["violation"]["violation_id"] for request in receiver.received()]
        assert sent == ["v0001", "v0002", "v0002", "v0003"]
        audit = client.get("/v1/admin/audit", params={"key_id": key_id(owner)}, headers=admin).json()
        # Newest first; one record per request the receiver got.
        assert [record["what"] for record in reversed(audit)] == [
            f"plates/evidence of violation {violation_id}" for violation_id in sent]
    finally:
        receiver.stop()
        api.close()


def test_a_batch_audits_each_change_it_discloses_and_stops_together_when_the_key_is_revoked(setup) -> None:
    api, client, receiver = setup
    receiver.status_for = lambda n: 503
    owner = api.key(Scope.SUBSCRIPTIONS_MANAGE, Scope.PLATES)
    admin = bearer(api.key(Scope.ADMIN))
    sid = client.post("/v1/subscriptions", json={"url": receiver.url, "max_changes_per_post": 10},
                      headers=bearer(owner)).json()["subscription_id"]
    api.feed.publish([violation(1), violation(2)])
    [first, *_] = wait_for(lambda: receiver.received()[1:] and receiver.received(),
                           message="the batch posted twice")
    plates = [change["violation"]["evidence"]["plate"] for change in first.json()["changes"]]
    assert plates == ["粤B12345", "粤B12345"]
    made = len(receiver.received())
    # Each attempt discloses both plates: audited per change and attempt.
    audit = client.get("/v1/admin/audit", params={"key_id": key_id(owner)}, headers=admin).json()
    disclosed = [record["what"] for record in audit]
    assert sorted(set(disclosed)) == [f"plates/evidence of violation v000{n}" for n in (1, 2)]
    assert len(disclosed) >= 2 * made

    assert client.delete(f"/v1/admin/keys/{key_id(owner)}", headers=admin).status_code == 204
    dead = wait_for(lambda: (found := api.dispatcher.store.deliveries(sid, status=DeliveryStatus.DEAD))
                    and len(found) == 2 and found, message="both dead-lettered")
    revoked = f"the API key {key_id(owner)} that owns this subscription was revoked"
    # The first checked before the next attempt says why; the other stops with its disabled subscription.
    assert sorted(d.last_error or "" for d in dead) == sorted([revoked, f"subscription disabled: {revoked}"])
    assert subscription(client, sid, admin)["enabled"] is False
