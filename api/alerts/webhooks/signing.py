"""HMAC-SHA256 signatures of webhook deliveries, in the header `X-Citywatch-Signature: t=<unix s>,v1=<hex>`.

The signed message is `<t>.<raw body>`: binding the timestamp stops a captured delivery from being
replayed later (receivers reject a `t` older than their tolerance, 5 minutes by default).

After a secret rotation the header carries one `v1` per secret still valid, the new secret's first:
`t=<t>,v1=<new>,v1=<previous>`. A receiver accepts the delivery when any `v1` matches its secret, so it
can switch to the new secret at any time during the grace period.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence

SIGNATURE_HEADER = "X-Citywatch-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DELIVERY_HEADER = "X-Citywatch-Delivery"
EVENT_HEADER = "X-Citywatch-Event"
DEFAULT_TOLERANCE_S = 300


def signature(secret: str, timestamp_s: int, body: bytes) -> str:
    # hmac.digest: the one-shot form computed in C, without building an HMAC object (a delivery signs
    # every attempt, so this runs for every request a burst of changes makes).
    return hmac.digest(secret.encode(), b"%d." % timestamp_s + body, "sha256").hex()


def signature_header(secret: str | Sequence[str], timestamp_s: int, body: bytes) -> str:
    """One `v1` per secret, in the order given (the current secret first)."""
    secrets = [secret] if isinstance(secret, str) else list(secret)
    return ",".join([f"t={timestamp_s}", *(f"v1={signature(s, timestamp_s, body)}" for s in secrets)])


def verify(secret: str, header: str, body: bytes, *, tolerance_s: int = DEFAULT_TOLERANCE_S,
           now_s: float | None = None) -> bool:
    """What a receiver does: recompute, compare in constant time, reject stale timestamps."""
    pairs = [part.split("=", 1) for part in header.split(",") if "=" in part]
    timestamps = [value for name, value in pairs if name == "t"]
    try:
        timestamp_s = int(timestamps[0])
    except (IndexError, ValueError):
        return False
    now_s = time.time() if now_s is None else now_s
    if abs(now_s - timestamp_s) > tolerance_s:
        return False
    expected = signature(secret, timestamp_s, body)
    return any(hmac.compare_digest(expected, value) for name, value in pairs if name == "v1")
