"""The current state of an API key, for what it opened earlier: a live stream, a webhook subscription.

A key is checked when a stream or a subscription is opened, and again for every message that goes
out, so a revoked key loses its streams and deliveries at the next message, and a key that lost the
`plates` scope gets masked plates from then on. Streams hold the key's token and ask the key store
(`KeyStore.verify`: revocation through the API is seen at once, by other processes within the store's
cache time); webhook subscriptions hold their owner's key id and read the key table: afresh for every
fan-out of new changes, and at most DELIVERY_KEY_AGE_S old for a delivery attempt (reading the whole
table for each of a thousand deliveries a second would cost more than the deliveries).
"""

from __future__ import annotations

import time

from api.access.control import ANONYMOUS, AccessControl
from api.access.keys import ApiKey, Scope
from core.settings import AuthMode

# How old the key table read by a webhook delivery attempt may be.
DELIVERY_KEY_AGE_S = 0.05


class KeyState:
    def __init__(self, access: AccessControl) -> None:
        self.access = access
        self._snapshot: tuple[float, dict[str, ApiKey]] | None = None

    @property
    def enforced(self) -> bool:
        """False with `api.auth: disabled`: no keys, nothing to revoke."""
        return self.access.mode is AuthMode.REQUIRED and self.access.keys is not None

    def by_token(self, token: str | None) -> ApiKey | None:
        """The key as it is now, or None when it was revoked (no rate limit: this is not a request)."""
        if not self.enforced:
            return ANONYMOUS
        assert self.access.keys is not None
        return self.access.keys.verify(token) if token else None

    def active_by_id(self, max_age_s: float = 0.0) -> dict[str, ApiKey]:
        """Every key that is not revoked, by key id: one read of the key table, or the last one when it
        is at most `max_age_s` old."""
        assert self.access.keys is not None
        now = time.monotonic()
        snapshot = self._snapshot
        if snapshot is not None and now - snapshot[0] <= max_age_s:
            return snapshot[1]
        active = {key.key_id: key for key in self.access.keys.list() if not key.revoked}
        self._snapshot = (now, active)
        return active


def stream_refusal(key: ApiKey | None) -> tuple[str, str] | None:
    """(error code, detail) when a stream opened with this key must end now; None while it may go on."""
    if key is None:
        return "key_revoked", "the API key of this stream was revoked"
    if not key.allows(Scope.VIOLATIONS_READ):
        return "key_lacks_scope", f"the API key of this stream no longer holds {Scope.VIOLATIONS_READ.value}"
    return None


def subscription_refusal(owner_key_id: str, owner: ApiKey | None) -> str | None:
    """Why a subscription's deliveries must stop (its owner key was revoked or narrowed), or None."""
    if owner is None:
        return f"the API key {owner_key_id} that owns this subscription was revoked"
    if not owner.allows(Scope.SUBSCRIPTIONS_MANAGE):
        return (f"the API key {owner_key_id} that owns this subscription no longer holds "
                f"{Scope.SUBSCRIPTIONS_MANAGE.value}")
    return None
