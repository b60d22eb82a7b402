"""The current state of an API key, for what it opened earlier: a live stream, a webhook subscription.

A key is checked when a stream or a subscription is opened, and again for every message that goes
out, so a revoked key loses its streams and deliveries at the next message, and a key that lost the
`plates` scope gets masked plates from then on. Streams hold the key's token and ask the key store
(`KeyStore.verify`: revocation through the API is seen at once, by other processes within the store's
cache time); webhook subscriptions hold their owner's key id and read the key table.
"""

from __future__ import annotations

from api.access.control import ANONYMOUS, AccessControl
from api.access.keys import ApiKey, Scope
from citywatch.settings import AuthMode


class KeyState:
    def __init__(self, access: AccessControl) -> None:
        self.access = access

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

    def active_by_id(self) -> dict[str, ApiKey]:
        """Every key that is not revoked, by key id (one read of the key table)."""
        assert self.access.keys is not None
        return {key.key_id: key for key in self.access.keys.list() if not key.revoked}


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
