"""The webhook dispatcher in a process of its own, as `citywatch up` runs it: the same signed, ordered,
retried deliveries as in-process, the API's changes to subscriptions reaching it, its counts in this
process's metrics, and no change lost when it is killed. Real receivers, the production dispatcher, store
and child process."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from api.access.keys import Scope
from api.alerts.filters import ViolationFilter
from api.alerts.key_state import DELIVERY_KEY_AGE_S
from api.alerts.webhooks.signing import verify
from api.alerts.webhooks.store import Delivery, DeliveryStatus, Subscription
from core.settings import WebhookSettings
from tests.support.alerts import AlertApi, alert_api, bearer, kill_sender_mid_request, violation
from tests.support.servers import Receiver
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

LOCAL = WebhookSettings(max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=2.0,
                        disable_after_failures=50, allowed_private_networks=("127.0.0.0/8",))


def start(apis: list[AlertApi], tmp_path, settings: WebhookSettings = LOCAL) -> AlertApi:
    api = alert_api(tmp_path, webhooks=settings, dispatcher_process=True)
    apis.append(api)
    return api


def receive(receivers: list[Receiver], **answers) -> Receiver:
    receiver = Receiver(**answers).start()
    receivers.append(receiver)
    return receiver


def subscribe(api: AlertApi, receiver: Receiver, filter: ViolationFilter | None = None) -> Subscription:
    owner = api.key(Scope.SUBSCRIPTIONS_MANAGE).split("_")[1]  # cw_<key id>_<secret>
    return api.dispatcher.create(url=receiver.url, filter=filter or ViolationFilter(), secret=None,
                                 description="", owner_key_id=owner, plates=False)


def delivered(api: AlertApi, subscription: Subscription, count: int) -> list[Delivery]:
    """Waits for `count` delivered rows (oldest first)."""
    def rows() -> list[Delivery]:
        found = api.dispatcher.store.deliveries(subscription.subscription_id, status=DeliveryStatus.DELIVERED)
        return sorted(found, key=lambda d: d.delivery_id) if len(found) >= count else []
    return wait_for(rows, message=f"{count} delivered")


def sent_ids(receiver: Receiver) -> list[str]:
    return [r.json()["violation"]["violation_id"] for r in receiver.received()]


def metric(api: AlertApi, name: str, labels: dict[str, str] | None = None) -> float:
    value = api.services.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_deliveries_are_made_by_the_child_signed_in_order_retried_and_counted_here(tmp_path, apis,
                                                                                   receivers) -> None:
    api = start(apis, tmp_path)
    assert api.dispatcher.sender_pid is None  # no subscription yet: no process
    receiver = receive(receivers, status_for=lambda n: 503 if n < 2 else 204)
    subscription = subscribe(api, receiver, ViolationFilter(grid=("FT-11",)))
    api.dispatcher.barrier()
    assert api.dispatcher.sender_pid not in (None, os.getpid())
    api.feed.publish([violation(1, grid="LH-02"), violation(2), violation(3)])

    [first, second] = delivered(api, subscription, 2)
    assert (first.attempts, first.last_status_code, second.attempts) == (3, 204, 1)
    assert sent_ids(receiver) == ["v0002"] * 3 + ["v0003"]
    received = receiver.received()
    assert all(verify(subscription.secret, r.headers["X-Citywatch-Signature"], r.body) for r in received)
    # The body's cursor is this process's feed's: a receiver can resume a stream from it.
    assert received[-1].json()["id"] == api.feed.cursor(3)
    # The child's counts reach this process's /metrics (sent twice a second).
    wait_for(lambda: (metric(api, "citywatch_webhook_deliveries_total", {"outcome": "delivered"}),
                      metric(api, "citywatch_webhook_deliveries_total", {"outcome": "failed_attempt"}),
                      metric(api, "citywatch_webhook_attempt_duration_seconds_count"),
                      metric(api, "citywatch_webhook_deliveries_pending")) == (2, 2, 4, 0),
             message="two delivered, two failed attempts, four durations and none pending, counted here")


def test_changes_published_before_the_first_subscription_are_not_delivered(tmp_path, apis,
                                                                            receivers) -> None:
    api = start(apis, tmp_path)
    api.feed.publish([violation(1)])
    receiver = receive(receivers)
    subscription = subscribe(api, receiver)
    api.feed.publish([violation(2)])
    delivered(api, subscription, 1)
    api.dispatcher.barrier()
    time.sleep(0.3)  # a delivery of the first change would have been made by now
    assert sent_ids(receiver) == ["v0002"]


def test_subscriptions_changed_through_the_api_are_followed_by_the_child(tmp_path, apis, receivers) -> None:
    api = start(apis, tmp_path, LOCAL.model_copy(update={"max_attempts": 2}))
    failing = receive(receivers, status_for=lambda n: 500 if n < 2 else 204)
    other = receive(receivers)
    subscription = subscribe(api, failing)
    api.feed.publish([violation(1)])
    [dead] = wait_for(lambda: api.dispatcher.store.deliveries(subscription.subscription_id,
                                                              status=DeliveryStatus.DEAD),
                      message="dead after two attempts")

    # Queued again through the API: the child delivers it (the receiver answers 204 from now on).
    api.dispatcher.redeliver(dead.delivery_id)
    [again] = delivered(api, subscription, 1)
    assert again.delivery_id == dead.delivery_id and sent_ids(failing) == ["v0001"] * 3

    # Moved to another URL and narrowed to another grid: the child posts there, and only that grid.
    api.dispatcher.update(subscription.subscription_id, url=other.url,
                          filter=ViolationFilter(grid=("LH-02",)))
    api.dispatcher.barrier()
    api.feed.publish([violation(2), violation(3, grid="LH-02")])
    wait_for(lambda: sent_ids(other) == ["v0003"], message="the change of the new grid at the new URL")

    # Deleted: nothing more.
    api.dispatcher.delete(subscription.subscription_id)
    api.dispatcher.barrier()
    api.feed.publish([violation(4, grid="LH-02")])
    api.dispatcher.barrier()
    time.sleep(0.3)
    assert sent_ids(other) == ["v0003"] and len(sent_ids(failing)) == 3


def test_the_child_posts_queued_changes_together_once_a_subscription_asks_and_counts_each(
        tmp_path, apis, receivers) -> None:
    api = start(apis, tmp_path)
    receiver = receive(receivers)
    subscription = subscribe(api, receiver)
    api.feed.publish([violation(1), violation(2)])
    delivered(api, subscription, 2)
    assert sent_ids(receiver) == ["v0001", "v0002"]  # one change a POST, by default

    api.dispatcher.update(subscription.subscription_id, max_changes_per_post=10)
    api.dispatcher.barrier()
    api.feed.publish([violation(n) for n in range(3, 7)])
    delivered(api, subscription, 6)
    batch = receiver.received()[2:]
    assert [[c["violation"]["violation_id"] for c in r.json()["changes"]] for r in batch] == [
        ["v0003", "v0004", "v0005", "v0006"]]
    assert batch[0].headers["X-Citywatch-Event"] == "batch"
    assert verify(subscription.secret, batch[0].headers["X-Citywatch-Signature"], batch[0].body)
    # Counted per change, here: six delivered by three POSTs.
    wait_for(lambda: (metric(api, "citywatch_webhook_deliveries_total", {"outcome": "delivered"}),
                      metric(api, "citywatch_webhook_attempt_duration_seconds_count")) == (6, 3),
             message="six changes delivered by three POSTs, counted here")


def test_a_killed_process_loses_no_change_and_a_new_one_makes_the_deliveries(tmp_path, apis,
                                                                             receivers) -> None:
    api = start(apis, tmp_path)
    # The first request is held by the receiver until the process was killed.
    receiver = receive(receivers, delay_for=lambda n: 1.5 if n == 0 else 0.0)
    subscription = subscribe(api, receiver)
    first_pid = kill_sender_mid_request(api, receiver)
    # Published while no process runs: kept, and handed to the next one.
    api.feed.publish([violation(2), violation(3)])

    rows = delivered(api, subscription, 3)
    assert [row.idempotency_key.split(":")[0] for row in rows] == ["v0001", "v0002", "v0003"]
    assert api.dispatcher.sender_pid not in (None, first_pid)
    # The request in flight when the process was killed is made again (at least once), then the rest.
    assert sent_ids(receiver) == ["v0001", "v0001", "v0002", "v0003"]


def test_stopping_ends_the_process_and_the_next_start_delivers_what_was_pending(tmp_path, apis,
                                                                                receivers) -> None:
    api = start(apis, tmp_path)
    # Answers only after the stop: the delivery is left pending.
    receiver = receive(receivers, delay_for=lambda n: 3.0 if n == 0 else 0.0)
    subscription = subscribe(api, receiver)
    api.feed.publish([violation(1)])
    api.dispatcher.barrier()
    pid = api.dispatcher.sender_pid
    assert pid is not None
    wait_for(lambda: receiver.requests, message="the request reached the receiver")
    api.dispatcher.stop()
    assert api.dispatcher.sender_pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    [pending] = api.dispatcher.store.deliveries(subscription.subscription_id)
    assert pending.status is DeliveryStatus.PENDING

    api.dispatcher.stop()  # stopped twice: nothing more
    restarted = start(apis, tmp_path)
    delivered(restarted, subscription, 1)
    assert sent_ids(receiver) == ["v0001", "v0001"]


PARENT = """
import sys, time
from pathlib import Path

from api.access.keys import Scope
from api.alerts.filters import ViolationFilter
from api.alerts.key_state import DELIVERY_KEY_AGE_S
from core.settings import WebhookSettings
from tests.support.alerts import alert_api

if __name__ == "__main__":
    api = alert_api(Path(sys.argv[1]), webhooks=WebhookSettings(allowed_private_networks=("127.0.0.0/8",)),
                    dispatcher_process=True)
    owner = api.key(Scope.SUBSCRIPTIONS_MANAGE).split("_")[1]
    api.dispatcher.create(url="http://127.0.0.1:9/hook", filter=ViolationFilter(), secret=None,
                          description="", owner_key_id=owner, plates=False)
    api.dispatcher.barrier()
    print(api.dispatcher.sender_pid, flush=True)
    time.sleep(120)
"""


def running(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for its new parent to reap it has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_the_process_ends_when_the_process_that_started_it_is_killed(tmp_path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    data = tmp_path / "data"
    data.mkdir()
    repo = Path(__file__).resolve().parents[2]
    with subprocess.Popen([sys.executable, str(script), str(data)], cwd=repo, stdout=subprocess.PIPE,
                          text=True, env={**os.environ, "PYTHONPATH": str(repo)}) as parent:
        try:
            assert parent.stdout is not None
            child_pid = int(parent.stdout.readline())
            assert running(child_pid)
        finally:
            parent.kill()
            parent.wait(10)
    wait_for(lambda: not running(child_pid), 20, message="the dispatcher process ended with its parent")


def test_plates_sent_by_the_process_are_audited_and_masked_once_the_owner_key_lost_the_scope(
        tmp_path, apis, receivers) -> None:
    api = start(apis, tmp_path)
    receiver = receive(receivers)
    client = api.client()
    owner = api.key(Scope.SUBSCRIPTIONS_MANAGE, Scope.PLATES)
    owner_id = owner.split("_")[1]
    admin = bearer(api.key(Scope.ADMIN))
    created = client.post("/v1/subscriptions", json={"url": receiver.url}, headers=bearer(owner)).json()
    assert created["plates"] is True
    api.dispatcher.barrier()
    api.feed.publish([violation(1)])
    [first] = wait_for(receiver.received, message="the unmasked delivery")
    assert first.json()["violation"]["evidence"]["plate"] == "粤B12345"

    # Narrowed in the key table: the process reads the owner key again before each batch.
    with sqlite3.connect(tmp_path / "access.sqlite3") as keys:
        keys.execute("UPDATE api_keys SET scopes = ? WHERE key_id = ?",
                     (Scope.SUBSCRIPTIONS_MANAGE.value, owner_id))
    time.sleep(DELIVERY_KEY_AGE_S)  # the process's keys are read at most this long ago
    api.feed.publish([violation(2)])
    second = wait_for(lambda: receiver.received()[1:], message="the next delivery")[0].json()
    assert second["violation"]["evidence"]["plate"] == "粤B1****"

    audit = client.get("/v1/admin/audit", params={"key_id": owner_id}, headers=admin).json()
    assert [record["what"] for record in audit] == ["plates/evidence of violation v0001"]
