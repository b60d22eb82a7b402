"""Several changes in one POST (`max_changes_per_post`), to real HTTP receivers, on SQLite and PostgreSQL:
the body, its signature and headers, the delivery log, retries and dead letters of a batch."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from api.alerts.webhooks.signing import verify
from api.alerts.webhooks.store import WebhookStore
from core.settings import PostgresSettings, RelationalKind, RelationalSettings
from tests.integration.test_webhooks import FAST, cleanup, deliveries, make_receiver, setup, subscribe
from tests.support.alerts import violation
from tests.support.postgres import PASSWORD
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
__all__ = ["cleanup"]  # the fixture, used by name below


def changes_of(request: Any) -> list[str]:
    """The violation ids a batched POST carried, in its order."""
    return [message["violation"]["violation_id"] for message in json.loads(request.body)["changes"]]


def test_changes_queued_together_go_in_one_signed_post_in_order(tmp_path, relational, receivers,
                                                                cleanup) -> None:
    api, client, headers = setup(tmp_path, relational)
    cleanup.append(api)
    receiver = make_receiver(receivers)
    created = subscribe(client, headers, receiver.url, max_changes_per_post=10)
    assert created["max_changes_per_post"] == 10
    sid = created["subscription_id"]

    api.feed.publish([violation(n) for n in range(1, 7)])  # queued together: one POST
    [request] = wait_for(receiver.received, message="one POST")
    assert changes_of(request) == [f"v000{n}" for n in range(1, 7)]
    assert verify(created["secret"], request.headers["X-Citywatch-Signature"], request.body)
    assert request.headers["X-Citywatch-Event"] == "batch"
    assert "Idempotency-Key" not in request.headers  # each change carries its own in the body
    messages = json.loads(request.body)["changes"]
    assert all(message["idempotency_key"].startswith(message["violation"]["violation_id"] + ":open:")
               for message in messages)
    logged = wait_for(lambda: (done := deliveries(client, headers, sid, status="delivered"))
                      and len(done) == 6 and done, message="six delivered")
    ids = request.headers["X-Citywatch-Delivery"].split(",")
    assert sorted(ids, key=int) == sorted(str(delivery["delivery_id"]) for delivery in logged)
    assert all(delivery["attempts"] == 1 and delivery["last_status_code"] == 200 for delivery in logged)

    # A later change, alone in the queue, still goes in the same form.
    api.feed.publish([violation(7)])
    wait_for(lambda: len(receiver.received()) == 2, message="the second POST")
    assert changes_of(receiver.received()[1]) == ["v0007"]


def test_a_failed_batch_is_retried_together_then_dead_lettered_together(tmp_path, relational, receivers,
                                                                        cleanup) -> None:
    api, client, headers = setup(tmp_path, relational, FAST.model_copy(update={"max_attempts": 3}))
    cleanup.append(api)
    receiver = make_receiver(receivers, status_for=lambda n: 503 if n < 1 else 204)
    flaky = subscribe(client, headers, receiver.url, max_changes_per_post=4)["subscription_id"]
    api.feed.publish([violation(n) for n in range(1, 5)])
    wait_for(lambda: len(deliveries(client, headers, flaky, status="delivered")) == 4,
             message="four delivered")
    batch = ["v0001", "v0002", "v0003", "v0004"]
    assert [changes_of(request) for request in receiver.received()] == [batch, batch]
    assert {d["attempts"] for d in deliveries(client, headers, flaky)} == {2}

    broken = make_receiver(receivers, status_for=lambda n: 500)
    dead = subscribe(client, headers, broken.url, max_changes_per_post=4)["subscription_id"]
    api.feed.publish([violation(n) for n in range(11, 14)])
    letters = wait_for(lambda: (found := client.get(f"/v1/subscriptions/{dead}/dead-letters",
                                                    headers=headers).json()) and len(found) == 3 and found,
                       message="three dead letters")
    assert len(broken.received()) == 3  # three attempts of one POST, not nine
    assert all(letter["attempts"] == 3 and letter["last_error"] == "HTTP 500" for letter in letters)
    # One dead letter redelivered goes on its own.
    broken.status_for = lambda n: 200
    response = client.post(f"/v1/subscriptions/{dead}/dead-letters/{letters[0]['delivery_id']}/redeliver",
                           headers=headers)
    assert response.status_code == 202
    wait_for(lambda: len(broken.received()) == 4, message="the redelivery")
    assert changes_of(broken.received()[3]) == [letters[0]["idempotency_key"].split(":")[0]]


def test_changes_per_post_is_checked_changed_and_shown(tmp_path, relational, receivers, cleanup) -> None:
    api, client, headers = setup(tmp_path, relational)
    cleanup.append(api)
    receiver = make_receiver(receivers)
    for wrong in (0, 101):
        response = client.post("/v1/subscriptions", json={"url": receiver.url, "max_changes_per_post": wrong},
                               headers=headers)
        assert response.status_code == 422 and "max_changes_per_post" in response.text
    created = subscribe(client, headers, receiver.url)
    assert created["max_changes_per_post"] == 1
    sid = created["subscription_id"]
    changed = client.patch(f"/v1/subscriptions/{sid}", json={"max_changes_per_post": 50}, headers=headers)
    assert changed.status_code == 200 and changed.json()["max_changes_per_post"] == 50
    assert client.get(f"/v1/subscriptions/{sid}", headers=headers).json()["max_changes_per_post"] == 50

    # The dispatcher took the change: the next changes queued together go in one POST.
    api.feed.publish([violation(n) for n in range(1, 4)])
    [request] = wait_for(receiver.received, message="one POST")
    assert changes_of(request) == ["v0001", "v0002", "v0003"]


def test_an_older_postgresql_table_gains_the_column(postgres: PostgresSettings, tmp_path) -> None:
    with psycopg.connect(host=postgres.host, port=postgres.port, user=postgres.user, password=PASSWORD,
                         dbname=postgres.database, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE subscriptions (subscription_id TEXT PRIMARY KEY, url TEXT NOT NULL, "
            "filter TEXT NOT NULL, secret TEXT NOT NULL, description TEXT NOT NULL, "
            "owner_key_id TEXT NOT NULL, plates SMALLINT NOT NULL, enabled SMALLINT NOT NULL, "
            "disabled_reason TEXT, "
            "created_time_ms BIGINT NOT NULL, previous_secret TEXT, previous_secret_expires_time_ms BIGINT)")
        connection.execute("INSERT INTO subscriptions VALUES ('s1', 'https://hooks.example/a', '{}', "
                           "'whsec_x', '', 'k1', 0, 1, NULL, 1, NULL, NULL)")
    settings = RelationalSettings(kind=RelationalKind.POSTGRESQL, postgresql=postgres)
    store = WebhookStore.open(settings, tmp_path)
    try:
        [subscription] = store.subscriptions()
        assert subscription.max_changes_per_post == 1
        updated = store.update_subscription("s1", max_changes_per_post=5)
        assert updated is not None and updated.max_changes_per_post == 5
    finally:
        store.close()
