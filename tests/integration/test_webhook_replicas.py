"""Two webhook dispatchers sharing one webhook store, as two api replicas of the Kafka set-up do: each
delivers the changes it owns, sees subscriptions made through the other, and takes over the pending
deliveries of changes handed to it. Real SQLite file (both replicas in one data directory) and real
PostgreSQL (each replica with a data directory of its own, as on two hosts), real HTTP receiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.access.control import AccessControl
from api.alerts.filters import ViolationFilter
from api.alerts.kafka_feed import violation_id_of
from api.alerts.webhooks.dispatcher import WebhookDispatcher
from api.alerts.webhooks.store import DeliveryStatus, WebhookStore
from core.settings import ApiSettings, AuthMode, RelationalKind, RelationalSettings, WebhookSettings
from processors.outputs.feed import ViolationFeed
from tests.support.alerts import violation
from tests.support.servers import Receiver
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

SETTINGS = WebhookSettings(max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=2.0,
                           sync_interval_s=0.05, allowed_private_networks=("127.0.0.0/8",))


class Replica:
    def __init__(self, data_dir: Path, owned: set[str], relational: RelationalSettings) -> None:
        self.owned = owned  # violation ids this replica dispatches (its partitions, in the api role)
        self.feed = ViolationFeed(100)
        self.access = AccessControl.in_directory(data_dir, ApiSettings(auth=AuthMode.DISABLED), relational)
        self.dispatcher = WebhookDispatcher(WebhookStore.open(relational, data_dir), SETTINGS, self.feed,
                                            self.access, owns=lambda key: violation_id_of(key) in self.owned,
                                            shared_store=True)
        self.dispatcher.start()

    def close(self) -> None:
        self.dispatcher.stop()
        self.dispatcher.store.close()
        self.access.close()


@pytest.fixture
def replicas(tmp_path: Path, relational: RelationalSettings) -> Iterator[tuple[Replica, Replica]]:
    # SQLite can only be shared by replicas on one host (one directory); PostgreSQL by replicas anywhere.
    shared = relational.kind is RelationalKind.SQLITE
    a = Replica(tmp_path if shared else tmp_path / "a", {"v0001"}, relational)
    b = Replica(tmp_path if shared else tmp_path / "b", {"v0002"}, relational)
    yield a, b
    a.close()
    b.close()


def test_a_change_is_delivered_by_its_owner_with_subscriptions_made_through_another_replica(
        replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    receiver = Receiver().start()
    try:
        subscription = a.dispatcher.create(url=receiver.url, filter=ViolationFilter(), secret=None,
                                           description="", owner_key_id="test", plates=False)
        # B learns of the subscription from the shared store before it fans out its first change.
        b.feed.publish([violation(2)])
        b.dispatcher.barrier()
        [delivery] = b.dispatcher.store.deliveries(subscription.subscription_id)
        assert delivery.idempotency_key.startswith("v0002:")
        wait_for(lambda: len(receiver.received()) == 1, 10, message="B's delivery")
        assert receiver.received()[0].json()["violation"]["violation_id"] == "v0002"
    finally:
        receiver.stop()


def test_pending_deliveries_move_with_their_changes(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    # The endpoint is down while A owns v0001: its delivery stays pending at A.
    receiver = Receiver(status_for=lambda n: 500 if n < 2 else 200).start()
    try:
        subscription = a.dispatcher.create(url=receiver.url, filter=ViolationFilter(), secret=None,
                                           description="", owner_key_id="test", plates=False)
        a.owned.clear()  # v0001's partition moves to B before A could deliver (A gives the row up) ...
        a.feed.publish([violation(1)])
        a.dispatcher.barrier()
        [pending] = a.dispatcher.store.deliveries(subscription.subscription_id)
        assert pending.status is DeliveryStatus.PENDING and receiver.received() == []
        b.owned.add("v0001")  # ... and B, given it, claims the pending row and delivers it.
        b.dispatcher.claim_pending()
        wait_for(lambda: b.dispatcher.store.deliveries(subscription.subscription_id)[0].status
                 is DeliveryStatus.DELIVERED, 10, message="B to deliver the moved change")
        assert {r.json()["violation"]["violation_id"] for r in receiver.received()} == {"v0001"}
    finally:
        receiver.stop()


def test_changes_published_before_a_subscription_existed_are_not_sent_to_it(
        replicas: tuple[Replica, Replica]) -> None:
    a, _ = replicas
    receiver = Receiver().start()
    try:
        subscription = a.dispatcher.create(url=receiver.url, filter=ViolationFilter(), secret=None,
                                           description="", owner_key_id="test", plates=False)
        a.owned.update({"v0001", "v0003"})
        # Read back from the violations topic by a group starting at its beginning: v0001 was written
        # before the subscription was created, v0003 after.
        a.feed.publish([violation(1)], published_time_ms=subscription.created_time_ms - 1)
        a.feed.publish([violation(3)], published_time_ms=subscription.created_time_ms)
        a.dispatcher.barrier()
        assert [d.idempotency_key.split(":")[0] for d in a.dispatcher.store.deliveries(
            subscription.subscription_id)] == ["v0003"]
        wait_for(lambda: len(receiver.received()) == 1, 10, message="the delivery of v0003")
    finally:
        receiver.stop()
