"""HMAC-SHA256 signatures of webhook deliveries, in the header `X-Citywatch-Signature: t=<unix s>,v1=<hex>`.

The signed message is `<t>.<raw body>`: binding the timestamp stops a captured delivery from being
replayed later (receivers reject a `t` older than their tolerance, 5 minutes by default).
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Citywatch-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DELIVERY_HEADER = "X-Citywatch-Delivery"
EVENT_HEADER = "X-Citywatch-Event"
DEFAULT_TOLERANCE_S = 300


def signature(secret: str, timestamp_s: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp_s}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp_s: int, body: bytes) -> str:
    return f"t={timestamp_s},v1={signature(secret, timestamp_s, body)}"


def verify(secret: str, header: str, body: bytes, *, tolerance_s: int = DEFAULT_TOLERANCE_S,
           now_s: float | None = None) -> bool:
    """What a receiver does: recompute, compare in constant time, reject stale timestamps."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp_s = int(fields["t"])
    except (KeyError, ValueError):
        return False
    now_s = time.time() if now_s is None else now_s
    if abs(now_s - timestamp_s) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp_s, body), fields.get("v1", ""))
