"""Webhook requests made by a child process, as `citywatch up` and the api role make them: the same signed
deliveries, retries, refusals and dead letters as in-process, and a sender process that dies costs a
failed attempt, not a delivery. Real receivers, the production dispatcher, store and child process."""

from __future__ import annotations

import os

import pytest

from api.access.keys import Scope
from api.alerts.filters import ViolationFilter
from api.alerts.webhooks.signing import verify
from api.alerts.webhooks.store import DeliveryStatus
from core.settings import WebhookSettings
from tests.support.alerts import AlertApi, alert_api, kill_sender_mid_request, violation
from tests.support.servers import Receiver
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

LOCAL = WebhookSettings(max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=2.0,
                        disable_after_failures=50, allowed_private_networks=("127.0.0.0/8",))


def start(apis: list[AlertApi], tmp_path, settings: WebhookSettings) -> AlertApi:
    api = alert_api(tmp_path, webhooks=settings, sender_process=True)
    apis.append(api)
    return api


def test_deliveries_from_the_sender_process_are_signed_retried_and_logged(tmp_path, apis, receivers) -> None:
    api = start(apis, tmp_path, LOCAL)
    assert api.dispatcher.sender_pid is None  # no subscription yet: no sender process
    receiver = Receiver(status_for=lambda n: 503 if n < 2 else 204).start()
    receivers.append(receiver)
    owner = api.key(Scope.SUBSCRIPTIONS_MANAGE).split("_")[1]  # cw_<key id>_<secret>
    subscription = api.dispatcher.create(url=receiver.url, filter=ViolationFilter(grid=("FT-11",)),
                                         secret=None, description="", owner_key_id=owner, plates=False)
    api.dispatcher.barrier()
    assert api.dispatcher.sender_pid not in (None, os.getpid())  # ready before the first delivery
    api.feed.publish([violation(1, grid="LH-02"), violation(2), violation(3)])

    def both_delivered() -> list:
        # The receiver has a post before its outcome is in the store (outcomes are written after the
        # answer): wait for both rows, not only for the four posts.
        delivered = sorted(api.dispatcher.store.deliveries(subscription.subscription_id,
                                                           status=DeliveryStatus.DELIVERED),
                           key=lambda d: d.delivery_id)
        return delivered if len(delivered) == 2 and len(receiver.received()) >= 4 else []

    [first, second] = wait_for(both_delivered, message="two deliveries after retries")
    assert (first.attempts, first.last_status_code, second.attempts) == (3, 204, 1)
    received = receiver.received()
    assert [r.json()["violation"]["violation_id"] for r in received] == ["v0002"] * 3 + ["v0003"]
    assert all(verify(subscription.secret, r.headers["X-Citywatch-Signature"], r.body) for r in received)
    assert received[0].headers["X-Citywatch-Event"] == "violation.opened"


def test_a_refused_destination_is_dead_lettered_with_the_reason_and_nothing_is_sent(tmp_path, apis,
                                                                                     receivers) -> None:
    api = start(apis, tmp_path, LOCAL.model_copy(update={"allowed_private_networks": ()}))
    receiver = Receiver().start()
    receivers.append(receiver)
    port = receiver.url.split(":")[2].split("/")[0]
    owner = api.key(Scope.SUBSCRIPTIONS_MANAGE).split("_")[1]
    # Accepted earlier (as if its name resolved to a public address then); resolved in the child now.
    by_name = api.dispatcher.create(url=f"http://localhost:{port}/hook", filter=ViolationFilter(),
                                    secret=None, description="", owner_key_id=owner, plates=False)
    api.dispatcher.barrier()
    api.feed.publish([violation(1)])
    [dead] = wait_for(lambda: api.dispatcher.store.deliveries(by_name.subscription_id,
                                                              status=DeliveryStatus.DEAD), message="refused")
    assert dead.last_error is not None and "webhook destination refused" in dead.last_error
    assert "localhost resolves to" in dead.last_error and dead.last_status_code is None
    assert receiver.received() == []


def test_a_sender_process_that_dies_costs_an_attempt_and_a_new_one_delivers(tmp_path, apis,
                                                                            receivers) -> None:
    api = start(apis, tmp_path, LOCAL.model_copy(update={"max_attempts": 10}))
    # The first request is held by the receiver until the sender process was killed.
    receiver = Receiver(delay_for=lambda n: 1.5 if n == 0 else 0.0).start()
    receivers.append(receiver)
    owner = api.key(Scope.SUBSCRIPTIONS_MANAGE).split("_")[1]
    subscription = api.dispatcher.create(url=receiver.url, filter=ViolationFilter(), secret=None,
                                         description="", owner_key_id=owner, plates=False)
    first_pid = kill_sender_mid_request(api, receiver)
    [done] = wait_for(lambda: api.dispatcher.store.deliveries(subscription.subscription_id,
                                                              status=DeliveryStatus.DELIVERED),
                      message="delivered by a new sender process")
    assert done.attempts >= 2 and api.dispatcher.sender_pid not in (None, first_pid)


def test_changes_queued_together_are_sent_by_the_process_in_order_until_one_fails(tmp_path, apis,
                                                                                  receivers) -> None:
    api = start(apis, tmp_path, LOCAL)
    receiver = Receiver(status_for=lambda n: 500 if n == 1 else 204).start()
    receivers.append(receiver)
    owner = api.key(Scope.SUBSCRIPTIONS_MANAGE).split("_")[1]
    subscription = api.dispatcher.create(url=receiver.url, filter=ViolationFilter(), secret=None,
                                         description="", owner_key_id=owner, plates=False)
    api.feed.publish([violation(n) for n in range(1, 5)])
    store, sid = api.dispatcher.store, subscription.subscription_id
    wait_for(lambda: len(store.deliveries(sid, status=DeliveryStatus.DELIVERED)) == 4,
             message="four deliveries")
    delivered = store.deliveries(sid)
    sent = [r.json()["violation"]["violation_id"] for r in receiver.received()]
    assert sent == ["v0001", "v0002", "v0002", "v0003", "v0004"]
    assert sorted(d.attempts for d in delivered) == [1, 1, 1, 2]
