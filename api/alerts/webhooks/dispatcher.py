"""Delivers violation changes to webhook subscriptions, each through its own bounded queue and worker.

All deliveries run on one asyncio loop in a dedicated thread. The processor thread only hands a batch
of feed entries to that loop (`call_soon_threadsafe`), so webhooks never block the pipeline. A change is
matched only against the subscriptions whose filter can want it (api/alerts/filters.py, FilterIndex),
its body encoded once per change (and plates visibility). Each subscription has its own queue (bounded
by `queue_per_subscription`) and its own task that delivers one change at a time, in order, retrying with
exponential backoff and jitter; a slow or failing endpoint therefore only delays its own queue. The
changes queued together for a subscription (up to SEQUENCE_MAX) are handed to the sender as one sequence,
posted one after the other until one fails; the one that failed is retried as any failed attempt, and
the ones after it are delivered after it, in order. A subscription with `max_changes_per_post` above 1
gets the changes queued for it (up to that many) in one POST instead, `{"changes": [...]}`, which
succeeds, fails and is retried as one attempt of each change it carries. The HTTP
requests go through api/alerts/webhooks/sender.py (a small keep-alive HTTP/1.1 client, http1.py): on this
loop, or (`sender_process`, as the api role runs it) in a child process, so that the HTTP client's work
does not hold the API's interpreter. `citywatch up` runs this whole dispatcher in a child process
(api/alerts/webhooks/dispatcher_process.py). Outcomes are written to the store together, one
transaction per pass of the loop.

Outcomes: a 2xx answer is delivered; anything else (other status, connection error, no answer within
`timeout_s`) is a failed attempt, retried until `max_attempts`, then dead-lettered (listed per
subscription, redeliverable through the API). After `disable_after_failures` failed attempts in a row
the subscription is disabled with the reason recorded, and its queued deliveries are dead-lettered;
while disabled, new changes are not queued for it.

Destinations are checked at every attempt (api/alerts/webhooks/destinations.py): the client resolves
through a resolver that refuses private, loopback and link-local answers unless allowed in the settings,
a URL with a literal address is checked before the request, and redirects are not followed. A refused
destination is a failed attempt with the reason in the delivery log; nothing is sent. The delivery log
keeps the status code and the timing of an answer, never its body (a receiver's answer is not the
subscriber's to read).

A subscription follows its owner key (api/alerts/key_state.py): at fan-out and before every attempt the
owner key is read; once it is revoked or lost `subscriptions:manage`, the subscription is disabled with
that reason and its queued deliveries are dead-lettered; once it lost `plates`, deliveries are masked
from the next attempt on. Unmasked plates sent are audited under the owner key at each attempt.

Metrics (core/metrics.py, once `report_to` names the process's): each step of a delivery by outcome,
dead letters by reason, the deliveries queued or being attempted here, and the time receivers take to
answer.

Several api replicas (the Kafka set-up, docs/kafka.md) share one webhook store and split the changes
between them: each replica is given `owns`, which says whether a change (by its idempotency key) is its
to deliver, and `shared_store=True`, so it picks up subscriptions and redeliveries made through another
replica (before each fan-out and every `sync_interval_s`). A replica delivers only the pending rows it
owns, and gives a row up (leaves it pending) once its change moved to another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
from yarl import URL

from api.access.control import AccessControl
from api.access.keys import ApiKey, Scope
from api.alerts.filters import FilterIndex, ViolationFilter
from api.alerts.key_state import DELIVERY_KEY_AGE_S, KeyState, subscription_refusal
from api.alerts.webhooks.destinations import DestinationPolicy, DestinationRefused, literal_address
from api.alerts.webhooks.sender import HttpSender, Outcome, Sender, SenderProcess
from api.alerts.webhooks.signing import (
    DEFAULT_TOLERANCE_S,
    DELIVERY_HEADER,
    EVENT_HEADER,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)
from api.alerts.webhooks.store import (
    Attempt,
    Delivery,
    DeliveryStatus,
    NewDelivery,
    Subscription,
    WebhookStore,
)
from api.violation_types import default_violation_types
from core.masking import discloses, present_violation
from core.metrics import Metrics
from core.models import Violation
from core.settings import WebhookSettings
from processors.outputs.feed import FeedEntry, ViolationFeed

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 30.0
# A subscription's deliveries queued together, handed to the sender as one sequence: under load each
# delivery no longer waits for its own round trip through this loop, the pipe and the sender's loop
# (which, behind the pipeline's interpreter, took longer than the receiver's answer). A sequence is
# signed when it is handed over, so it is also kept short enough for its last post to leave, even if every
# post before it waited the whole timeout, within half a receiver's tolerance of the signature's age.
SEQUENCE_MAX = 20
# The event header of a POST that carries several changes (`max_changes_per_post`).
BATCH_EVENT = "batch"
# Destination checks remembered (one per subscription URL in practice).
_MAX_CHECKED_URLS = 10_000


@dataclass
class _Worker:
    subscription: Subscription
    queue: asyncio.Queue[Delivery]
    consecutive_failures: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class WebhookDispatcher:
    def __init__(self, store: WebhookStore, settings: WebhookSettings, feed: ViolationFeed,
                 access: AccessControl, *, rng: Callable[[], float] = random.random,
                 owns: Callable[[str], bool] | None = None, shared_store: bool = False,
                 violation_types: frozenset[str] | None = None, sender_process: bool = False) -> None:
        """`violation_types`: what filters may name (default: the rules' types and the default code
        table's; api/alerts/violation_types.py). `sender_process`: the HTTP requests are made by a child
        process (api/alerts/webhooks/sender.py), off the interpreter that runs the pipeline."""
        self.store = store
        self.violation_types = violation_types if violation_types is not None else default_violation_types()
        self.settings = settings
        self.feed = feed
        self.access = access
        self.keys = KeyState(access)
        self.policy = DestinationPolicy(settings.allowed_private_networks)
        self._rng = rng
        self._owns = owns
        self._shared = shared_store
        # Delivery ids queued or being delivered here, so a sync never queues one twice.
        self._queued: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sender: Sender = SenderProcess(settings) if sender_process else HttpSender(settings)
        self._workers: dict[str, _Worker] = {}
        self._sequence_max = max(1, min(SEQUENCE_MAX, int(DEFAULT_TOLERANCE_S / 2 // settings.timeout_s)))
        # The subscriptions by filter: a change is matched only against those that can want it.
        self._index: FilterIndex[str] = FilterIndex()
        self._background: set[asyncio.Task[None]] = set()
        # Outcomes not yet written: written together, one transaction per pass of the loop (a commit per
        # delivery was a large share of a delivery's cost).
        self._outcomes: list[Attempt] = []
        # Destinations already checked, by URL (the policy does not change while running).
        self._refusals: dict[str, str | None] = {}
        # Counted in a registry of its own until report_to names the one the process serves.
        self.metrics = Metrics()
        feed.add_listener(self._on_publish)

    @property
    def sender_pid(self) -> int | None:
        """The process id of the sender process (None: requests are made in this process, or none was
        made yet)."""
        return self._sender.child_pid if isinstance(self._sender, SenderProcess) else None

    def report_to(self, metrics: Metrics) -> None:
        """Count deliveries in `metrics`, the registry served at the process's /metrics."""
        self.metrics = metrics
        metrics.webhook_pending.set_function(lambda: len(self._queued))

    # Lifecycle

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="citywatch-webhooks", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop
        asyncio.run_coroutine_threadsafe(self._startup(), loop).result(30)

    def stop(self, timeout_s: float = 10.0) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout_s)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout_s)

    async def _startup(self) -> None:
        await self._sender.start()
        for subscription in self.store.subscriptions():
            self._add_worker(subscription)
        self._claim_pending()  # left over from the last run: at least once
        self._spawn(self._prune_forever())
        if self._shared:
            self._spawn(self._sync_forever())

    async def _shutdown(self) -> None:
        tasks = [*self._background, *(w.task for w in self._workers.values() if w.task is not None)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._write_outcomes()
        self._workers.clear()
        self._index = FilterIndex()
        await self._sender.close()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _call(self, function: Callable[..., object], *args: object) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(function, *args)

    # Management, thread-safe (called from the API's thread pool)

    def create(self, *, url: str, filter: ViolationFilter, secret: str | None, description: str,
               owner_key_id: str, plates: bool, max_changes_per_post: int = 1) -> Subscription:
        subscription = self.store.create_subscription(url=url, filter=filter, secret=secret,
                                                      description=description, owner_key_id=owner_key_id,
                                                      plates=plates,
                                                      max_changes_per_post=max_changes_per_post)
        self._call(self._add_worker, subscription)
        return subscription

    def update(self, subscription_id: str, *, url: str | None = None, filter: ViolationFilter | None = None,
               enabled: bool | None = None, max_changes_per_post: int | None = None) -> Subscription | None:
        subscription = self.store.update_subscription(subscription_id, url=url, filter=filter,
                                                      enabled=enabled,
                                                      max_changes_per_post=max_changes_per_post)
        if subscription is not None:
            self._call(self._replace_subscription, subscription)
        return subscription

    def rotate_secret(self, subscription_id: str, *, secret: str | None, grace_s: int) -> Subscription | None:
        subscription = self.store.rotate_secret(subscription_id, secret=secret, grace_ms=grace_s * 1000)
        if subscription is not None:
            self._call(self._replace_subscription, subscription)
        return subscription

    def owner_refusal(self, subscription: Subscription) -> str | None:
        """Why the subscription's owner key may not receive deliveries now (None: it may)."""
        if not self.keys.enforced:
            return None
        owner = self.keys.active_by_id().get(subscription.owner_key_id)
        return subscription_refusal(subscription.owner_key_id, owner)

    def active_keys(self) -> dict[str, ApiKey] | None:
        """The active keys by id, read now; None when keys are not used (auth disabled)."""
        return self.keys.active_by_id() if self.keys.enforced else None

    def plates_now(self, subscription: Subscription, owners: dict[str, ApiKey] | None) -> bool:
        """Whether deliveries carry unmasked plates now: the owner key had `plates` at creation and
        still has it. `owners`: `active_keys()`."""
        return self._owner_access(subscription, owners)[1]

    def delete(self, subscription_id: str) -> bool:
        deleted = self.store.delete_subscription(subscription_id)
        self._call(self._remove_worker, subscription_id)
        return deleted

    def redeliver(self, delivery_id: int) -> Delivery | None:
        delivery = self.store.requeue(delivery_id)
        if delivery is not None and delivery.status is DeliveryStatus.PENDING:
            self._call(self._enqueue, delivery)
        return delivery

    def claim_pending(self) -> None:
        """Queue the pending deliveries this replica owns now (after it was given more changes)."""
        self._call(self._claim_pending)

    def barrier(self, timeout_s: float = 30.0) -> None:
        """Return once every change handed over before this call is in the webhook store (durable), so
        the Kafka offset that covers it can be committed. Raises when the dispatcher is not running."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the webhook dispatcher is not running")
        done = threading.Event()
        loop.call_soon_threadsafe(done.set)  # runs after every fan-out queued before it (FIFO)
        if not done.wait(timeout_s):
            raise TimeoutError(f"the webhook dispatcher did not store the changes within {timeout_s:g} s")

    # On the dispatcher's loop

    def _owned(self, delivery: Delivery) -> bool:
        return self._owns is None or self._owns(delivery.idempotency_key)

    def _claim_pending(self) -> None:
        self._write_outcomes()  # a delivery done here but not yet written must not look pending
        for delivery in self.store.pending():
            if delivery.delivery_id not in self._queued and self._owned(delivery):
                self._enqueue(delivery)

    def _sync_subscriptions(self) -> None:
        """Match the workers to the shared store: another replica may have created, changed or deleted a
        subscription."""
        current = {s.subscription_id: s for s in self.store.subscriptions()}
        for subscription_id in [sid for sid in self._workers if sid not in current]:
            self._remove_worker(subscription_id)
        for subscription in current.values():
            worker = self._workers.get(subscription.subscription_id)
            if worker is None:
                self._add_worker(subscription)
            elif worker.subscription != subscription:
                self._replace_subscription(subscription)

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sync_interval_s)
            try:
                self._sync_subscriptions()
                self._claim_pending()
            except Exception:  # a locked or briefly unavailable store: try again next time
                log.exception("webhook store sync failed")

    def _add_worker(self, subscription: Subscription) -> None:
        if subscription.subscription_id in self._workers:
            return
        worker = _Worker(subscription, asyncio.Queue(self.settings.queue_per_subscription))
        worker.task = asyncio.ensure_future(self._run(worker))
        self._workers[subscription.subscription_id] = worker
        self._index.add(subscription.subscription_id, subscription.filter)
        self._sender.prepare()

    def _replace_subscription(self, subscription: Subscription) -> None:
        worker = self._workers.get(subscription.subscription_id)
        if worker is None:
            self._add_worker(subscription)
            return
        if subscription.enabled and not worker.subscription.enabled:
            worker.consecutive_failures = 0
        if subscription.filter != worker.subscription.filter:
            self._index.add(subscription.subscription_id, subscription.filter)
        worker.subscription = subscription

    def _remove_worker(self, subscription_id: str) -> None:
        worker = self._workers.pop(subscription_id, None)
        self._index.remove(subscription_id)
        if worker is not None and worker.task is not None:
            worker.task.cancel()
            while not worker.queue.empty():
                self._queued.discard(worker.queue.get_nowait().delivery_id)

    def _on_publish(self, entries: Sequence[FeedEntry]) -> None:
        """Feed listener on the processor thread: hand off, never wait."""
        self.hand_over(entries)

    def hand_over(self, entries: Sequence[FeedEntry]) -> None:
        """Queue the changes for the fan-out on the dispatcher's loop (thread-safe, never waits)."""
        self._call(self._fan_out, list(entries))

    def sync(self) -> None:
        """Take what another process changed in the store: subscriptions made, changed or deleted, and
        deliveries queued again (thread-safe, never waits)."""
        self._call(self._sync_and_claim)

    def _sync_and_claim(self) -> None:
        self._sync_subscriptions()
        self._claim_pending()

    def _fan_out(self, entries: list[FeedEntry]) -> None:
        if self._shared:
            self._sync_subscriptions()
        owners = self.active_keys()
        # Whether each subscription may be sent changes now, and with plates; a refused one is disabled.
        plates_of: dict[str, bool | None] = {}
        if owners is not None:
            for worker in list(self._workers.values()):
                if worker.subscription.enabled:
                    refusal, plates = self._owner_access(worker.subscription, owners)
                    if refusal is not None:
                        self._disable(worker, refusal)
                    plates_of[worker.subscription.subscription_id] = None if refusal is not None else plates
        bodies: dict[tuple[int, bool], bytes] = {}
        new: list[NewDelivery] = []
        for entry in entries:
            # In the order of the entries, so each subscription's deliveries keep the changes' order.
            for subscription_id in self._index.matching(entry):
                subscription = self._workers[subscription_id].subscription
                if not subscription.enabled:
                    continue
                allowed = subscription.plates if owners is None else plates_of.get(subscription_id)
                if allowed is None:
                    continue  # its owner key was refused above
                plates = allowed
                if entry.published_time_ms < subscription.created_time_ms:
                    # Published before the subscription existed: read again from the violations topic
                    # (a new alerts group starts at its beginning), never news to this subscriber.
                    continue
                body = bodies.get((entry.seq, plates))
                if body is None:
                    body = self._body(entry, plates)
                    bodies[(entry.seq, plates)] = body
                new.append(NewDelivery(subscription_id, entry.idempotency_key, self.feed.cursor(entry.seq),
                                       body))
        if new:
            for delivery in self.store.add_deliveries(new):
                self._enqueue(delivery)

    def _owner_access_now(self, subscription: Subscription) -> tuple[str | None, bool]:
        """`_owner_access` with the keys as they are before an attempt (read at most DELIVERY_KEY_AGE_S
        ago)."""
        return self._owner_access(
            subscription, self.keys.active_by_id(DELIVERY_KEY_AGE_S) if self.keys.enforced else None)

    def _owner_access(self, subscription: Subscription,
                      owners: dict[str, ApiKey] | None) -> tuple[str | None, bool]:
        """(why deliveries must stop, or None; whether they may carry unmasked plates). `owners`: the
        active keys by id, None when keys are not used (auth disabled)."""
        if owners is None:
            return None, subscription.plates
        owner = owners.get(subscription.owner_key_id)
        refusal = subscription_refusal(subscription.owner_key_id, owner)
        return refusal, subscription.plates and owner is not None and owner.allows(Scope.PLATES)

    def _body(self, entry: FeedEntry, plates: bool) -> bytes:
        violation = present_violation(entry.violation, plates=plates) if entry.violation is not None else None
        message = entry.message(self.feed.cursor(entry.seq), violation)
        return json.dumps(message, ensure_ascii=False).encode()

    def _enqueue(self, delivery: Delivery) -> None:
        worker = self._workers.get(delivery.subscription_id)
        if worker is None:
            return
        try:
            worker.queue.put_nowait(delivery)
            self._queued.add(delivery.delivery_id)
        except asyncio.QueueFull:
            self._dead_lettered("queue_full")
            self._record(
                delivery.delivery_id, status=DeliveryStatus.DEAD, attempts=delivery.attempts,
                status_code=None, error=f"queue full ({self.settings.queue_per_subscription} waiting): "
                                        "the endpoint is slower than the changes")

    async def _run(self, worker: _Worker) -> None:
        while True:
            batch = [await worker.queue.get()]
            together = worker.subscription.max_changes_per_post
            limit = together if together > 1 else self._sequence_max
            while len(batch) < limit and not worker.queue.empty():
                batch.append(worker.queue.get_nowait())
            try:
                if together > 1:  # always in that form, one change or more: the receiver reads one form
                    try:
                        await self._deliver_together(worker, batch)
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # a bug here must not end this subscription's worker
                        log.exception("webhook deliveries %d-%d failed unexpectedly",
                                      batch[0].delivery_id, batch[-1].delivery_id)
                    continue
                try:
                    made = await self._in_sequence(worker, batch)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug here: each delivery is then attempted on its own
                    log.exception("webhook deliveries %d-%d could not be sent in sequence",
                                  batch[0].delivery_id, batch[-1].delivery_id)
                    made = []
                for index, delivery in enumerate(batch):
                    try:
                        await self._deliver(worker, delivery, made[index] if index < len(made) else None)
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # a bug here must not end this subscription's worker
                        log.exception("webhook delivery %d failed unexpectedly", delivery.delivery_id)
            finally:
                for delivery in batch:
                    self._queued.discard(delivery.delivery_id)

    async def _in_sequence(self, worker: _Worker, batch: list[Delivery]) -> list[Outcome]:
        """The first attempt of a subscription's deliveries queued together, as one sequence: the outcomes
        of those made, in order (they stop at the first failure). None made (each then attempted by
        `_deliver`) for a single delivery, or when a check before an attempt would stop one."""
        subscription = worker.subscription
        if len(batch) < 2 or not subscription.enabled or not all(self._owned(d) for d in batch):
            return []
        refusal, plates = self._owner_access_now(subscription)
        if refusal is not None or self._refused_destination(subscription.url) is not None:
            return []
        requests = [self._request(subscription, delivery, plates) for delivery in batch]
        made = await self._sender.post_in_order(subscription.url, [(body, headers)
                                                                    for body, headers, _ in requests])
        for (_, _, disclosed), outcome in zip(requests, made, strict=False):  # made stops at a failure
            if disclosed is not None and outcome[2] is not None:  # sent: a disclosure to the receiver
                self._audit(subscription, disclosed)
        return made

    async def _deliver(self, worker: _Worker, delivery: Delivery, made: Outcome | None = None) -> None:
        """Deliver, retrying; `made`: the outcome of a first attempt made in a sequence (_in_sequence)."""
        settings = self.settings
        attempts = delivery.attempts
        while True:
            if made is not None:
                attempts += 1
                (status_code, error, duration_ms), made = made, None
            else:
                checked = self._checked(worker, delivery, attempts)
                if checked is None:
                    return
                subscription, plates = checked
                attempts += 1
                status_code, error, duration_ms = await self._attempt(subscription, delivery, plates)
            self._count_attempt(error, duration_ms)
            if error is None:
                worker.consecutive_failures = 0
                self._record(delivery.delivery_id, status=DeliveryStatus.DELIVERED,
                             attempts=attempts, status_code=status_code, error=None,
                             duration_ms=duration_ms)
                return
            worker.consecutive_failures += 1
            if worker.consecutive_failures >= settings.disable_after_failures:
                reason = (f"disabled after {worker.consecutive_failures} failed attempts in a row; "
                          f"last error: {error}")
                self._disable(worker, reason)
                self._dead_lettered("subscription_disabled")
                self._record(delivery.delivery_id, status=DeliveryStatus.DEAD, attempts=attempts,
                             status_code=status_code, error=error, duration_ms=duration_ms)
                return
            if attempts >= settings.max_attempts:
                self._dead_lettered("attempts_exhausted")
                self._record(delivery.delivery_id, status=DeliveryStatus.DEAD, attempts=attempts,
                             status_code=status_code, error=error, duration_ms=duration_ms)
                return
            self._record(delivery.delivery_id, status=DeliveryStatus.PENDING, attempts=attempts,
                         status_code=status_code, error=error, duration_ms=duration_ms)
            await asyncio.sleep(self.backoff_s(attempts))

    async def _deliver_together(self, worker: _Worker, batch: list[Delivery]) -> None:
        """Deliver changes queued together in one POST (`max_changes_per_post`), retrying them together
        as `_deliver` retries one: each change's attempt is counted and recorded, a change that used up
        `max_attempts` is dead-lettered and the others are posted again after the backoff."""
        settings = self.settings
        attempts = [delivery.attempts for delivery in batch]  # made so far, by position in the batch
        while batch:
            if not all(self._owned(delivery) for delivery in batch):
                # A change moved to another replica: each checked on its own from here.
                await self._deliver_each(worker, batch, attempts)
                return
            checked = self._checked(worker, batch[0], attempts[0])
            if checked is None:  # stopped, and recorded for the first: the others stop the same way
                await self._deliver_each(worker, batch[1:], attempts[1:])
                return
            subscription, plates = checked
            status_code, error, duration_ms = await self._attempt_together(subscription, batch, plates)
            self._count_attempt(error, duration_ms, len(batch))
            attempts = [made + 1 for made in attempts]
            if error is None:
                worker.consecutive_failures = 0
                for delivery, made in zip(batch, attempts, strict=True):
                    self._record(delivery.delivery_id, status=DeliveryStatus.DELIVERED, attempts=made,
                                 status_code=status_code, error=None, duration_ms=duration_ms)
                return
            worker.consecutive_failures += 1  # one POST failed: one failure, however many it carried
            disable = worker.consecutive_failures >= settings.disable_after_failures
            if disable:
                self._disable(worker, f"disabled after {worker.consecutive_failures} failed attempts in a "
                                      f"row; last error: {error}")
            waiting: list[Delivery] = []
            waiting_attempts: list[int] = []
            for delivery, made in zip(batch, attempts, strict=True):
                if disable or made >= settings.max_attempts:
                    self._dead_lettered("subscription_disabled" if disable else "attempts_exhausted")
                    self._record(delivery.delivery_id, status=DeliveryStatus.DEAD, attempts=made,
                                 status_code=status_code, error=error, duration_ms=duration_ms)
                else:
                    self._record(delivery.delivery_id, status=DeliveryStatus.PENDING, attempts=made,
                                 status_code=status_code, error=error, duration_ms=duration_ms)
                    waiting.append(delivery)
                    waiting_attempts.append(made)
            batch, attempts = waiting, waiting_attempts
            if batch:
                await asyncio.sleep(self.backoff_s(max(attempts)))

    async def _deliver_each(self, worker: _Worker, batch: list[Delivery], attempts: list[int]) -> None:
        """The changes of a batch delivered one by one, each with the attempts it made in the batch."""
        for delivery, made in zip(batch, attempts, strict=True):
            await self._deliver(worker, replace(delivery, attempts=made) if made != delivery.attempts
                                else delivery)

    def _checked(self, worker: _Worker, delivery: Delivery,
                 attempts: int) -> tuple[Subscription, bool] | None:
        """Before an attempt: the subscription and whether it may have plates now; None when the delivery
        must stop here (recorded)."""
        if not self._owned(delivery):
            return None  # its change moved to another replica, which delivers the pending row
        subscription = worker.subscription
        if not subscription.enabled:
            self._dead_lettered("subscription_disabled")
            self._record(delivery.delivery_id, status=DeliveryStatus.DEAD, attempts=attempts,
                         status_code=None, error=f"subscription disabled: {subscription.disabled_reason}")
            return None
        refusal, plates = self._owner_access_now(subscription)
        if refusal is not None:
            self._disable(worker, refusal)
            self._dead_lettered("owner_key")
            self._record(delivery.delivery_id, status=DeliveryStatus.DEAD, attempts=attempts,
                         status_code=None, error=refusal)
            return None
        return subscription, plates

    def _record(self, delivery_id: int, *, status: DeliveryStatus, attempts: int, status_code: int | None,
                error: str | None, duration_ms: int | None = None) -> None:
        """Record an outcome with the others of this pass of the loop (written right after it)."""
        if not self._outcomes:
            asyncio.get_running_loop().call_soon(self._write_outcomes)
        self._outcomes.append(Attempt(delivery_id, status, attempts, status_code, error, duration_ms))

    def _write_outcomes(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        if not outcomes:
            return
        try:
            self.store.record_attempts(outcomes)
        except Exception:  # the rows stay pending: delivered again after a restart (at least once)
            log.exception("%d webhook delivery outcomes could not be recorded", len(outcomes))

    def _count_attempt(self, error: str | None, duration_ms: int | None, changes: int = 1) -> None:
        """One POST's outcome, counted for each of the `changes` it carried."""
        # An attempt without a duration sent nothing: its destination was refused (see _attempt).
        if duration_ms is None:
            self.metrics.webhook_deliveries.labels("refused_destination").inc(changes)
            return
        self.metrics.webhook_attempt_seconds.observe(duration_ms / 1000)
        outcome = "delivered" if error is None else "failed_attempt"
        self.metrics.webhook_deliveries.labels(outcome).inc(changes)

    def _dead_lettered(self, reason: str) -> None:
        self.metrics.webhook_deliveries.labels("dead_lettered").inc()
        self.metrics.webhook_dead_letters.labels(reason).inc()

    def backoff_s(self, attempts: int) -> float:
        """Exponential, capped, with jitter: half the delay fixed, half random, so retries spread out."""
        delay = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempts - 1))
        return delay / 2 + self._rng() * delay / 2

    def _disable(self, worker: _Worker, reason: str) -> None:
        log.warning("webhook subscription %s %s", worker.subscription.subscription_id, reason)
        updated = self.store.update_subscription(worker.subscription.subscription_id, enabled=False,
                                                 disabled_reason=reason)
        if updated is not None:
            worker.subscription = updated

    def _outgoing(self, subscription: Subscription, delivery: Delivery,
                  plates: bool) -> tuple[bytes, str, str | None]:
        """The body to send now, its change (opened/cleared) and the id of the violation whose plates or
        evidence it discloses (None: nothing). A body stored with unmasked plates is masked when the owner
        key lost `plates` since."""
        change = change_of(delivery.idempotency_key)
        if not subscription.plates or change not in ("opened", "cleared"):
            return delivery.body, change, None  # stored masked, or a case event (nothing personal in it)
        try:
            message = json.loads(delivery.body)
        except ValueError:
            return delivery.body, change, None
        if "violation" not in message:
            return delivery.body, change, None
        violation = msgspec.convert(message["violation"], Violation)
        if not plates:
            message["violation"] = present_violation(violation, plates=False)
            return json.dumps(message, ensure_ascii=False).encode(), change, None
        return delivery.body, change, violation.violation_id if discloses(violation) else None

    def _audit(self, subscription: Subscription, violation_id: str) -> None:
        """Unmasked plates or evidence sent to the receiver: each attempt is a disclosure, audited under the
        owner key."""
        if self.access.audit_log is not None:
            self.access.audit_log.record(subscription.owner_key_id, f"webhook {subscription.subscription_id}",
                                         f"plates/evidence of violation {violation_id}")

    def _refused_destination(self, url: str) -> str | None:
        """A URL with a literal address never reaches the resolver: check it here (once per URL)."""
        if url in self._refusals:
            return self._refusals[url]
        if len(self._refusals) > _MAX_CHECKED_URLS:
            self._refusals.clear()
        refusal = self._refusals[url] = self._check_destination(url)
        return refusal

    def _check_destination(self, url: str) -> str | None:
        host = URL(url).host or ""
        try:
            self.policy.check_host_name(host)
            if literal_address(host) is not None:
                self.policy.check_addresses(host, [host.strip("[]")])
        except DestinationRefused as exc:
            return str(exc)
        return None

    async def _attempt(self, subscription: Subscription, delivery: Delivery,
                       plates: bool) -> Outcome:
        """(status code, error or None, duration in ms) of one POST; no duration when the destination was
        refused and nothing was sent."""
        refused = self._refused_destination(subscription.url)
        if refused is not None:
            return None, refused, None
        body, headers, disclosed = self._request(subscription, delivery, plates)
        if disclosed is not None:
            self._audit(subscription, disclosed)
        return await self._sender.post(subscription.url, body, headers)

    async def _attempt_together(self, subscription: Subscription, batch: list[Delivery],
                                plates: bool) -> Outcome:
        """`_attempt` for changes posted together: `{"changes": [<message>, ...]}`, in their order."""
        refused = self._refused_destination(subscription.url)
        if refused is not None:
            return None, refused, None
        messages = []
        for delivery in batch:
            body, _, disclosed = self._outgoing(subscription, delivery, plates)
            if disclosed is not None:
                self._audit(subscription, disclosed)
            messages.append(body)
        body = b'{"changes":[' + b",".join(messages) + b"]}"
        headers = _signed_headers(subscription, body, {
            DELIVERY_HEADER: ",".join(str(delivery.delivery_id) for delivery in batch),
            EVENT_HEADER: BATCH_EVENT,
        })
        return await self._sender.post(subscription.url, body, headers)

    def _request(self, subscription: Subscription, delivery: Delivery,
                 plates: bool) -> tuple[bytes, dict[str, str], str | None]:
        """The body and headers of an attempt, signed now, and the violation it discloses (`_outgoing`)."""
        body, change, disclosed = self._outgoing(subscription, delivery, plates)
        headers = _signed_headers(subscription, body, {
            IDEMPOTENCY_HEADER: delivery.idempotency_key,
            DELIVERY_HEADER: str(delivery.delivery_id),
            EVENT_HEADER: f"case.{change}" if change.startswith("case_") else f"violation.{change}",
        })
        return body, headers, disclosed

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_INTERVAL_S)
            for subscription_id in list(self._workers):
                self.store.prune(subscription_id, self.settings.delivery_log_per_subscription)


def _signed_headers(subscription: Subscription, body: bytes, more: dict[str, str]) -> dict[str, str]:
    """The headers of a POST of `body`, signed now with the subscription's secrets, then `more`."""
    timestamp_s = int(time.time())
    secrets = subscription.signing_secrets(timestamp_s * 1000)
    return {"Content-Type": "application/json",
            SIGNATURE_HEADER: signature_header(secrets, timestamp_s, body), **more}


def change_of(idempotency_key: str) -> str:
    """The change a delivery carries, from its idempotency key: `<violation id>:<open|cleared>:<ms>` for a
    violation change (opened, cleared), `<case id>:<kind>:<due ms>` for a case event (its kind)."""
    parts = idempotency_key.rsplit(":", 2)
    if len(parts) != 3:
        return ""
    return {"open": "opened", "cleared": "cleared"}.get(parts[1], parts[1])

