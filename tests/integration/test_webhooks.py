"""Webhook deliveries to real HTTP receivers: signatures, retries, duplicates, dead letters, disabling.

The receivers are real HTTP servers on free ports; the dispatcher, its SQLite store and the API are
the production classes. Backoff is shortened through the settings, never mocked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.access.keys import Scope
from api.alerts.webhooks.signing import verify
from core.models import ViolationStatus
from core.settings import RelationalSettings, WebhookSettings
from tests.support.alerts import AlertApi, alert_api, bearer, violation
from tests.support.servers import Receiver
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

# The receivers listen on 127.0.0.1: a private destination, allowed here as for an on-premises receiver.
LOCAL = ("127.0.0.0/8",)
FAST = WebhookSettings(max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=2.0,
                       disable_after_failures=50, allowed_private_networks=LOCAL)


def make_receiver(receivers: list[Receiver], **behaviour: Any) -> Receiver:
    receiver = Receiver(**behaviour).start()
    receivers.append(receiver)
    return receiver


def setup(tmp_path: Path, relational: RelationalSettings,
          settings: WebhookSettings = FAST) -> tuple[AlertApi, TestClient, dict[str, str]]:
    """An API with webhooks; `relational` (the fixture): every test runs on SQLite and on PostgreSQL."""
    api = alert_api(tmp_path, webhooks=settings, relational=relational)
    client = api.client()
    return api, client, bearer(api.key(Scope.SUBSCRIPTIONS_MANAGE))


@pytest.fixture
def cleanup() -> Iterator[list[AlertApi]]:
    apis: list[AlertApi] = []
    yield apis
    for api in apis:
        api.close()


def subscribe(client: TestClient, headers: dict[str, str], url: str, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/subscriptions", json={"url": url, **body}, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def deliveries(client: TestClient, headers: dict[str, str], subscription_id: str,
               **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/v1/subscriptions/{subscription_id}/deliveries", params=params, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()
    return items


def test_a_delivery_is_signed_carries_an_idempotency_key_and_only_matching_changes(
        tmp_path, relational, receivers, cleanup) -> None:
    api, client, headers = setup(tmp_path, relational)
    cleanup.append(api)
    receiver = make_receiver(receivers)
    created = subscribe(client, headers, receiver.url,
                        filter={"grid": ["FT-11"], "type": ["illegal_parking"]})
    assert created["secret"].startswith("whsec_") and created["plates"] is False

    parking = "illegal_parking"
    api.feed.publish([violation(1, grid="LH-02", type=parking), violation(2, type=parking),
                      violation(3, type="bin_overflow")])
    [request] = wait_for(receiver.received, message="one delivery")
    body = request.json()
    assert body["violation"]["violation_id"] == "v0002" and body["change"] == "opened"
    assert verify(created["secret"], request.headers["X-Citywatch-Signature"], request.body)
    signature = request.headers["X-Citywatch-Signature"]
    assert not verify("another-secret-of-enough-length", signature, request.body)
    assert not verify(created["secret"], signature, request.body + b" ")
    v = violation(2, type=parking)
    assert request.headers["Idempotency-Key"] == f"v0002:open:{v.updated_time_ms}"
    assert request.headers["X-Citywatch-Event"] == "violation.opened"
    # The key that created the subscription has no plates scope: masked plate, no snapshot link.
    assert body["violation"]["evidence"]["plate"] == "粤B1****"
    assert body["violation"]["evidence"]["snapshot_url"] is None

    [logged] = wait_for(lambda: deliveries(client, headers, created["subscription_id"], status="delivered"))
    assert logged["attempts"] == 1 and logged["last_status_code"] == 200


def test_a_failing_receiver_gets_retries_until_it_answers(tmp_path, relational, receivers, cleanup) -> None:
    api, client, headers = setup(tmp_path, relational)
    cleanup.append(api)
    receiver = make_receiver(receivers, status_for=lambda n: 500 if n < 3 else 204)
    created = subscribe(client, headers, receiver.url)
    api.feed.publish([violation(1)])
    [logged] = wait_for(lambda: deliveries(client, headers, created["subscription_id"], status="delivered"),
                        message="delivery after retries")
    assert logged["attempts"] == 4
    keys = {r.headers["Idempotency-Key"] for r in receiver.received()}
    assert len(receiver.received()) == 4 and len(keys) == 1


def test_duplicates_carry_the_same_key_so_the_receiver_can_drop_them(tmp_path, relational, receivers,
                                                                     cleanup) -> None:
    settings = FAST.model_copy(update={"timeout_s": 0.3})
    api, client, headers = setup(tmp_path, relational, settings)
    cleanup.append(api)
    # The first answer comes after the dispatcher gave up waiting: it retries, the receiver sees it twice.
    receiver = make_receiver(receivers, delay_for=lambda n: 1.0 if n == 0 else 0.0)
    created = subscribe(client, headers, receiver.url)
    change = violation(1)
    api.feed.publish([change])
    api.feed.publish([change])  # a replay after a crash: never queued twice
    wait_for(lambda: deliveries(client, headers, created["subscription_id"], status="delivered"),
             message="delivered after a timeout")
    received = receiver.received()
    assert len(received) == 2
    processed = {r.headers["Idempotency-Key"] for r in received}  # what a receiver keeps
    assert processed == {f"v0001:open:{change.updated_time_ms}"}
    assert len(deliveries(client, headers, created["subscription_id"])) == 1

    cleared = violation(1, status=ViolationStatus.CLEARED, updated_offset_ms=5000)
    api.feed.publish([cleared])
    wait_for(lambda: len(deliveries(client, headers, created["subscription_id"], status="delivered")) == 2)
    assert receiver.received()[-1].json()["change"] == "cleared"


def test_after_the_last_retry_a_delivery_is_dead_lettered_and_can_be_redelivered(
        tmp_path, relational, receivers, cleanup) -> None:
    api, client, headers = setup(tmp_path, relational, FAST.model_copy(update={"max_attempts": 2}))
    cleanup.append(api)
    receiver = make_receiver(receivers, status_for=lambda n: 503 if n < 2 else 200)
    created = subscribe(client, headers, receiver.url)
    sid = created["subscription_id"]
    api.feed.publish([violation(1)])
    [dead] = wait_for(lambda: client.get(f"/v1/subscriptions/{sid}/dead-letters", headers=headers).json(),
                      message="dead letter")
    assert dead["attempts"] == 2 and dead["last_status_code"] == 503 and "HTTP 503" in dead["last_error"]

    response = client.post(f"/v1/subscriptions/{sid}/dead-letters/{dead['delivery_id']}/redeliver",
                           headers=headers)
    assert response.status_code == 202 and response.json()["status"] == "pending"
    [done] = wait_for(lambda: deliveries(client, headers, sid, status="delivered"), message="redelivery")
    assert done["delivery_id"] == dead["delivery_id"]
    assert client.get(f"/v1/subscriptions/{sid}/dead-letters", headers=headers).json() == []
    again = client.post(f"/v1/subscriptions/{sid}/dead-letters/{dead['delivery_id']}/redeliver",
                        headers=headers)
    assert again.status_code == 409


def test_an_endpoint_that_keeps_failing_is_disabled_and_never_delays_the_others(
        tmp_path, relational, receivers, cleanup) -> None:
    # The timeout leaves the broken endpoint's 0.3 s answer a wide margin on a loaded machine: its last error
    # is its HTTP 500, not a timeout.
    settings = FAST.model_copy(update={"max_attempts": 100, "disable_after_failures": 4, "timeout_s": 2.0})
    api, client, headers = setup(tmp_path, relational, settings)
    cleanup.append(api)
    # The broken one is slow too: it answers 500 after 0.3 s, every time.
    broken = make_receiver(receivers, status_for=lambda n: 500, delay_for=lambda n: 0.3)
    healthy = make_receiver(receivers)
    bad = subscribe(client, headers, broken.url)["subscription_id"]
    good = subscribe(client, headers, healthy.url)["subscription_id"]

    api.feed.publish([violation(n) for n in range(1, 6)])
    # All five reach the healthy receiver while the broken one has not even finished its first retries.
    wait_for(lambda: len(healthy.received()) == 5, message="healthy receiver served")
    assert len(broken.received()) < 4

    disabled = wait_for(lambda: (s := client.get(f"/v1/subscriptions/{bad}", headers=headers).json())
                        and not s["enabled"] and s, message="subscription disabled")
    assert "4 failed attempts in a row" in disabled["disabled_reason"]
    assert "HTTP 500" in disabled["disabled_reason"]
    wait_for(lambda: len(client.get(f"/v1/subscriptions/{bad}/dead-letters", headers=headers).json()) == 5,
             message="queued deliveries dead-lettered")
    assert client.get(f"/v1/subscriptions/{good}", headers=headers).json()["enabled"] is True

    # Re-enabled after the endpoint was fixed: new changes flow again.
    assert client.patch(f"/v1/subscriptions/{bad}", json={"enabled": True},
                        headers=headers).json()["disabled_reason"] is None
    broken.status_for = lambda n: 200
    broken.delay_for = lambda n: 0.0
    api.feed.publish([violation(9)])
    wait_for(lambda: deliveries(client, headers, bad, status="delivered"), message="delivery after re-enable")


def test_subscriptions_belong_to_their_key(tmp_path, relational, receivers, cleanup) -> None:
    api, client, headers = setup(tmp_path, relational)
    cleanup.append(api)
    receiver = make_receiver(receivers)
    mine = subscribe(client, headers, receiver.url)["subscription_id"]
    other = bearer(api.key(Scope.SUBSCRIPTIONS_MANAGE, name="other"))
    assert client.get("/v1/subscriptions", headers=other).json() == []
    assert client.get(f"/v1/subscriptions/{mine}", headers=other).status_code == 404
    admin = bearer(api.key(Scope.ADMIN))
    assert [s["subscription_id"] for s in client.get("/v1/subscriptions", headers=admin).json()] == [mine]
    assert client.post("/v1/subscriptions", json={"url": "ftp://x"}, headers=headers).status_code == 422
    assert client.delete(f"/v1/subscriptions/{mine}", headers=headers).status_code == 204
    assert client.get("/v1/subscriptions", headers=headers).json() == []


def test_pending_deliveries_survive_a_restart(tmp_path, relational, receivers, cleanup) -> None:
    patient = FAST.model_copy(update={"max_attempts": 1000})
    api, client, headers = setup(tmp_path, relational, patient)
    down = make_receiver(receivers, status_for=lambda n: 500)
    sid = subscribe(client, headers, down.url)["subscription_id"]
    api.feed.publish([violation(1)])
    wait_for(lambda: len(down.received()) >= 2, message="failing attempts")
    api.close()

    up = make_receiver(receivers)
    # The same settings after the restart: with FAST's 5 attempts, a delivery that had already failed
    # 5 times before the stop (likely on a loaded machine) would go dead instead of being retried.
    restarted, client, _ = setup(tmp_path, relational, patient)
    cleanup.append(restarted)
    restarted.dispatcher.update(sid, url=up.url)
    # The dispatcher read the pending delivery back at start; after the URL change it succeeds.
    wait_for(lambda: deliveries(client, headers, sid, status="delivered"), 15,
             message="delivered after restart")
    assert up.received()[0].json()["violation"]["violation_id"] == "v0001"


def count_sequences(api: AlertApi, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of each sequence the dispatcher hands to its sender, counted on the way: the real sender
    still posts to the receiver."""
    sequences: list[int] = []
    sender = api.dispatcher._sender
    post_in_order = sender.post_in_order

    async def counted(url: str, posts: list[tuple[bytes, dict[str, str]]]) -> list[Any]:
        sequences.append(len(posts))
        return await post_in_order(url, posts)

    monkeypatch.setattr(sender, "post_in_order", counted)
    return sequences


def test_changes_queued_together_go_out_in_one_sequence_in_order_across_a_failure(
        tmp_path, relational, receivers, cleanup, monkeypatch) -> None:
    api, client, headers = setup(tmp_path, relational)
    cleanup.append(api)
    receiver = make_receiver(receivers, status_for=lambda n: 500 if n == 2 else 204)
    created = subscribe(client, headers, receiver.url)
    sequences = count_sequences(api, monkeypatch)
    api.feed.publish([violation(n) for n in range(1, 7)])
    wait_for(lambda: len(deliveries(client, headers, created["subscription_id"], status="delivered")) == 6,
             message="six deliveries")
    logged = deliveries(client, headers, created["subscription_id"])
    # The third failed once: retried before the three behind it, which follow in order.
    sent = [request.headers["Idempotency-Key"].split(":")[0] for request in receiver.received()]
    assert sent == ["v0001", "v0002", "v0003", "v0003", "v0004", "v0005", "v0006"]
    assert sequences[0] == 6
    assert sorted(delivery["attempts"] for delivery in logged) == [1, 1, 1, 1, 1, 2]


def test_with_a_long_timeout_changes_go_one_at_a_time_so_no_signature_is_stale_when_sent(
        tmp_path, relational, receivers, cleanup, monkeypatch) -> None:
    """A sequence is signed when handed over; with a 100 s timeout a second post could leave after half a
    receiver's five-minute tolerance, so each change goes out on its own, signed just before."""
    api, client, headers = setup(tmp_path, relational, FAST.model_copy(update={"timeout_s": 100.0}))
    cleanup.append(api)
    receiver = make_receiver(receivers)
    created = subscribe(client, headers, receiver.url)
    sequences = count_sequences(api, monkeypatch)
    api.feed.publish([violation(n) for n in range(1, 4)])
    wait_for(lambda: len(deliveries(client, headers, created["subscription_id"], status="delivered")) == 3,
             message="three deliveries")
    assert sequences == []
    assert [r.headers["Idempotency-Key"].split(":")[0] for r in receiver.received()] == ["v0001", "v0002",
                                                                                          "v0003"]
