"""A change's body is stored once for all the subscriptions it goes to, read back with every delivery, and
dropped with the last delivery that carries it; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from api.alerts.filters import ViolationFilter
from api.alerts.webhooks.store import Attempt, DeliveryStatus, NewDelivery, WebhookStore

pytestmark = pytest.mark.integration


def bodies_stored(store: WebhookStore) -> int:
    row = store._execute("SELECT COUNT(*) FROM delivery_bodies").one()
    assert row is not None
    return int(row[0])


def test_a_change_s_body_is_stored_once_and_dropped_with_its_last_delivery(tmp_path, relational) -> None:
    store = WebhookStore.open(relational, tmp_path)
    try:
        subscriptions = [store.create_subscription(url=f"https://hooks.example/{n}",
                                                   filter=ViolationFilter(), secret=None, description="",
                                                   owner_key_id="k", plates=False) for n in range(3)]
        first, second = b'{"change": 1}', b'{"change": 2}'
        new = [NewDelivery(s.subscription_id, f"v{change}:open:1", f"1-{change}", body)
               for change, body in ((1, first), (2, second)) for s in subscriptions]
        created = store.add_deliveries(new)
        assert len(created) == 6 and bodies_stored(store) == 2
        assert [d.body for d in store.pending()] == [first, first, first, second, second, second]
        assert store.delivery(created[4].delivery_id).body == second  # type: ignore[union-attr]

        # The same change again (a replay) adds no delivery, and no body.
        assert store.add_deliveries(new[:1]) == []
        assert bodies_stored(store) == 2

        # Delivered, pruned to the newest one per subscription: the first change's body goes.
        store.record_attempts([Attempt(d.delivery_id, DeliveryStatus.DELIVERED, 1, 200, None, 5)
                               for d in created])
        assert store.prune(subscriptions[0].subscription_id, keep=1) == 1
        assert bodies_stored(store) == 2  # the other subscriptions' rows still carry it
        for subscription in subscriptions[1:]:
            assert store.prune(subscription.subscription_id, keep=1) == 1
        assert bodies_stored(store) == 1
        assert {d.body for s in subscriptions for d in store.deliveries(s.subscription_id)} == {second}

        # Kept while one subscription still has it; gone with the last.
        store.delete_subscription(subscriptions[0].subscription_id)
        store.delete_subscription(subscriptions[1].subscription_id)
        assert bodies_stored(store) == 1
        store.delete_subscription(subscriptions[2].subscription_id)
        assert bodies_stored(store) == 0
    finally:
        store.close()
