"""Webhook subscriptions through the API: create, list, change, delete, delivery log, dead letters.

A key with `subscriptions:manage` sees and changes its own subscriptions; `admin` sees all of them.
The signing secret is returned once, at creation or rotation. Bodies refuse unknown keys and filters
unknown violation types, naming the closest valid one (api/alerts/strict.py); a URL whose host is or
resolves to a private, loopback or link-local address is refused unless allowed in the settings
(api/alerts/webhooks/destinations.py).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlparse

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field, field_validator

from api.access.deps import require
from api.access.keys import ApiKey, Scope
from api.alerts.filters import ViolationFilter, refuse_unknown_types
from api.alerts.strict import StrictModel
from api.alerts.webhooks.destinations import DestinationRefused
from api.alerts.webhooks.dispatcher import WebhookDispatcher
from api.alerts.webhooks.store import Delivery, DeliveryStatus, Subscription

# Unknown query parameters are refused for every /v1 route by api/strict_input.py.
router = APIRouter(prefix="/v1/subscriptions", tags=["webhooks"])

Manager = Annotated[ApiKey, Depends(require(Scope.SUBSCRIPTIONS_MANAGE))]


def get_dispatcher(request: Request) -> WebhookDispatcher:
    dispatcher: WebhookDispatcher | None = request.state.services.webhooks
    if dispatcher is None:
        raise HTTPException(503, "webhooks are not available in this instance")
    return dispatcher


DispatcherDep = Annotated[WebhookDispatcher, Depends(get_dispatcher)]


def _check_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"url must be http(s)://host/..., got {url!r}")
    return url


# At most this many changes in one POST: a receiver reads a whole body before answering, and the
# delivery must still answer within the timeout.
MAX_CHANGES_PER_POST = 100
_BATCH_DESCRIPTION = (
    "How many of the changes queued for the subscription one POST may carry: 1 (the default) sends each "
    "change in a POST of its own; more sends the changes waiting at the time together, as "
    "`{\"changes\": [...]}` (docs/alerts.md, \"Several changes in one POST\").")


class SubscriptionIn(StrictModel):
    url: str = Field(description="Where deliveries are POSTed (http or https; use https in production).")
    filter: ViolationFilter = Field(default_factory=ViolationFilter,
                                    description="Which changes to deliver; empty: all of them.")
    secret: str | None = Field(None, min_length=16,
                               description="Signing secret; omitted: one is generated and returned once.")
    description: str = Field("", max_length=500)
    max_changes_per_post: int = Field(1, ge=1, le=MAX_CHANGES_PER_POST, description=_BATCH_DESCRIPTION)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)


class SubscriptionPatch(StrictModel):
    url: str | None = None
    filter: ViolationFilter | None = None
    enabled: bool | None = Field(None, description="true re-enables a disabled subscription.")
    max_changes_per_post: int | None = Field(None, ge=1, le=MAX_CHANGES_PER_POST,
                                             description=_BATCH_DESCRIPTION)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)


class SubscriptionOut(BaseModel):
    subscription_id: str
    url: str
    filter: ViolationFilter
    description: str
    owner_key_id: str
    plates: bool = Field(description="Deliveries carry unmasked plates (the owner key had the plates scope).")
    enabled: bool
    disabled_reason: str | None = Field(description="Why it was disabled automatically; null when enabled.")
    created_time_ms: int
    previous_secret_expires_time_ms: int | None = Field(
        description="After a secret rotation: until when deliveries are also signed with the previous "
                    "secret; null when only the current secret signs.")
    max_changes_per_post: int = Field(description=_BATCH_DESCRIPTION)


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(description="The signing secret, shown only now: store it with the receiver.")


MAX_GRACE_S = 7 * 24 * 3600


class SecretRotation(StrictModel):
    secret: str | None = Field(None, min_length=16,
                               description="The new signing secret; omitted: one is generated.")
    grace_s: int = Field(24 * 3600, ge=0, le=MAX_GRACE_S,
                         description="How long deliveries are also signed with the previous secret (a second "
                                     "`v1` in the signature header), so the receiver can switch without "
                                     "losing deliveries; 0: the previous secret stops at once.")


class DeliveryOut(BaseModel):
    delivery_id: int
    idempotency_key: str = Field(description="violation id:status:updated time; the same on every retry.")
    change_id: str = Field(description="The feed id of the change (as in streams).")
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None = Field(description="Why the last attempt failed: a status code, a connection "
                                               "error or a refused destination (never the answer's body).")
    last_duration_ms: int | None = Field(description="How long the last attempt took until the answer.")
    created_time_ms: int
    updated_time_ms: int


def _out(subscription: Subscription, owners: dict[str, ApiKey] | None,
         dispatcher: WebhookDispatcher) -> SubscriptionOut:
    """`owners`: the active keys (`dispatcher.active_keys()`), read once per request."""
    expires = subscription.previous_secret_expires_time_ms if subscription.previous_secret else None
    return SubscriptionOut(subscription_id=subscription.subscription_id, url=subscription.url,
                           filter=subscription.filter, description=subscription.description,
                           owner_key_id=subscription.owner_key_id,
                           plates=dispatcher.plates_now(subscription, owners),
                           enabled=subscription.enabled, disabled_reason=subscription.disabled_reason,
                           created_time_ms=subscription.created_time_ms,
                           previous_secret_expires_time_ms=expires,
                           max_changes_per_post=subscription.max_changes_per_post)


def _one(subscription: Subscription, dispatcher: WebhookDispatcher) -> SubscriptionOut:
    return _out(subscription, dispatcher.active_keys(), dispatcher)


def _delivery_out(delivery: Delivery) -> DeliveryOut:
    return DeliveryOut(delivery_id=delivery.delivery_id, idempotency_key=delivery.idempotency_key,
                       change_id=delivery.change_id, status=delivery.status, attempts=delivery.attempts,
                       last_status_code=delivery.last_status_code, last_error=delivery.last_error,
                       last_duration_ms=delivery.last_duration_ms, created_time_ms=delivery.created_time_ms,
                       updated_time_ms=delivery.updated_time_ms)


def _owned(dispatcher: WebhookDispatcher, key: ApiKey, subscription_id: str) -> Subscription:
    subscription = dispatcher.store.subscription(subscription_id)
    if subscription is None or not (key.allows(Scope.ADMIN) or subscription.owner_key_id == key.key_id):
        raise HTTPException(404, f"no subscription {subscription_id!r}")
    return subscription


def _check_destination(dispatcher: WebhookDispatcher, url: str) -> None:
    try:
        dispatcher.policy.check_url(url)
    except DestinationRefused as exc:
        raise HTTPException(422, f"url: {exc}") from exc


def _check_filter(dispatcher: WebhookDispatcher, filter: ViolationFilter) -> None:
    refuse_unknown_types(filter, dispatcher.violation_types, "filter.type")


@router.post("", status_code=201, response_model=SubscriptionCreated, summary="Subscribe a webhook")
def create_subscription(body: SubscriptionIn, key: Manager, dispatcher: DispatcherDep) -> SubscriptionCreated:
    _check_filter(dispatcher, body.filter)
    _check_destination(dispatcher, body.url)
    subscription = dispatcher.create(url=body.url, filter=body.filter, secret=body.secret,
                                     description=body.description, owner_key_id=key.key_id,
                                     plates=key.allows(Scope.PLATES),
                                     max_changes_per_post=body.max_changes_per_post)
    return SubscriptionCreated(**_one(subscription, dispatcher).model_dump(), secret=subscription.secret)


@router.get("", response_model=list[SubscriptionOut], summary="List subscriptions")
def list_subscriptions(key: Manager, dispatcher: DispatcherDep) -> list[SubscriptionOut]:
    owner = None if key.allows(Scope.ADMIN) else key.key_id
    owners = dispatcher.active_keys()
    return [_out(s, owners, dispatcher) for s in dispatcher.store.subscriptions(owner)]


@router.get("/{subscription_id}", response_model=SubscriptionOut, summary="One subscription")
def get_subscription(subscription_id: str, key: Manager, dispatcher: DispatcherDep) -> SubscriptionOut:
    return _one(_owned(dispatcher, key, subscription_id), dispatcher)


@router.patch("/{subscription_id}", response_model=SubscriptionOut,
              summary="Change the URL, filter or changes per POST, or enable or disable")
def update_subscription(subscription_id: str, body: SubscriptionPatch, key: Manager,
                        dispatcher: DispatcherDep) -> SubscriptionOut:
    subscription = _owned(dispatcher, key, subscription_id)
    if body.filter is not None:
        _check_filter(dispatcher, body.filter)
    if body.url is not None:
        _check_destination(dispatcher, body.url)
    if body.enabled:
        refusal = dispatcher.owner_refusal(subscription)
        if refusal is not None:
            raise HTTPException(409, f"cannot enable: {refusal}; create a new subscription with an "
                                     "active key")
    updated = dispatcher.update(subscription_id, url=body.url, filter=body.filter, enabled=body.enabled,
                                max_changes_per_post=body.max_changes_per_post)
    if updated is None:
        raise HTTPException(404, f"no subscription {subscription_id!r}")
    return _one(updated, dispatcher)


@router.post("/{subscription_id}/secret", response_model=SubscriptionCreated,
             summary="Rotate the signing secret (the new one is shown once)")
def rotate_secret(subscription_id: str, key: Manager, dispatcher: DispatcherDep,
                  body: Annotated[SecretRotation | None, Body()] = None) -> SubscriptionCreated:
    _owned(dispatcher, key, subscription_id)
    rotation = body or SecretRotation()
    rotated = dispatcher.rotate_secret(subscription_id, secret=rotation.secret, grace_s=rotation.grace_s)
    if rotated is None:
        raise HTTPException(404, f"no subscription {subscription_id!r}")
    return SubscriptionCreated(**_one(rotated, dispatcher).model_dump(), secret=rotated.secret)


@router.delete("/{subscription_id}", status_code=204, summary="Delete a subscription and its log")
def delete_subscription(subscription_id: str, key: Manager, dispatcher: DispatcherDep) -> Response:
    _owned(dispatcher, key, subscription_id)
    dispatcher.delete(subscription_id)
    return Response(status_code=204)


@router.get("/{subscription_id}/deliveries", response_model=list[DeliveryOut],
            summary="Delivery log, newest first")
def list_deliveries(subscription_id: str, key: Manager, dispatcher: DispatcherDep,
                    status: Annotated[DeliveryStatus | None, Query()] = None,
                    before: Annotated[int | None, Query(description="Delivery id to page before.")] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[DeliveryOut]:
    _owned(dispatcher, key, subscription_id)
    deliveries = dispatcher.store.deliveries(subscription_id, status=status, before_id=before, limit=limit)
    return [_delivery_out(d) for d in deliveries]


@router.get("/{subscription_id}/dead-letters", response_model=list[DeliveryOut],
            summary="Deliveries that failed every attempt, newest first")
def list_dead_letters(subscription_id: str, key: Manager, dispatcher: DispatcherDep,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[DeliveryOut]:
    _owned(dispatcher, key, subscription_id)
    deliveries = dispatcher.store.deliveries(subscription_id, status=DeliveryStatus.DEAD, limit=limit)
    return [_delivery_out(d) for d in deliveries]


@router.post("/{subscription_id}/dead-letters/{delivery_id}/redeliver", response_model=DeliveryOut,
             status_code=202, summary="Queue a dead-lettered delivery again")
def redeliver(subscription_id: str, delivery_id: int, key: Manager, dispatcher: DispatcherDep) -> DeliveryOut:
    _owned(dispatcher, key, subscription_id)
    delivery = dispatcher.store.delivery(delivery_id)
    if delivery is None or delivery.subscription_id != subscription_id:
        raise HTTPException(404, f"no delivery {delivery_id} in subscription {subscription_id!r}")
    if delivery.status is not DeliveryStatus.DEAD:
        raise HTTPException(409, f"delivery {delivery_id} is {delivery.status.value}, not dead")
    requeued = dispatcher.redeliver(delivery_id)
    assert requeued is not None
    return _delivery_out(requeued)
