"""Authentication, scopes and rate limits as one object the API asks on every request."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from api.access.audit import AuditLog
from api.access.keys import ApiKey, KeyStore, Scope, open_access_db
from api.access.ratelimit import RateLimiter
from citywatch.masking import discloses, masked_violation, present_violation
from citywatch.models import Violation
from citywatch.settings import ApiSettings, AuthMode

# Who an unauthenticated request is when auth is disabled (local demo): everything, audited as such.
ANONYMOUS = ApiKey(key_id="anonymous", name="auth disabled", scopes=frozenset({Scope.ADMIN}),
                   created_time_ms=0)


class AuthError(Exception):
    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers or {}


class AccessControl:
    def __init__(self, mode: AuthMode, keys: KeyStore | None, audit: AuditLog | None,
                 limiter: RateLimiter | None) -> None:
        if mode is AuthMode.REQUIRED and keys is None:
            raise ValueError("auth required needs a key store")
        self.mode = mode
        self.keys = keys
        self.audit_log = audit
        self.limiter = limiter

    @classmethod
    def open(cls) -> AccessControl:
        """No keys, no limits, no audit: for API instances built in-process by tests and tools."""
        return cls(AuthMode.DISABLED, None, None, None)

    @classmethod
    def in_directory(cls, data_dir: Path, settings: ApiSettings) -> AccessControl:
        connection = open_access_db(data_dir)
        lock = threading.Lock()
        limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        return cls(settings.auth, KeyStore(connection, lock), AuditLog(connection, lock),
                   limiter if settings.auth is AuthMode.REQUIRED else None)

    def authenticate(self, token: str | None) -> ApiKey:
        if self.mode is AuthMode.DISABLED:
            return ANONYMOUS
        assert self.keys is not None
        if not token:
            raise AuthError(401, "an API key is required: send it as `Authorization: Bearer <key>` "
                                 "or `X-API-Key: <key>`", {"WWW-Authenticate": "Bearer"})
        key = self.keys.verify(token)
        if key is None:
            raise AuthError(401, "the API key is unknown or revoked", {"WWW-Authenticate": "Bearer"})
        if self.limiter is not None:
            wait_s = self.limiter.acquire(key.key_id)
            if wait_s > 0:
                retry_after = max(1, int(wait_s + 0.999))
                raise AuthError(
                    429, f"rate limit of {self.limiter.rate_per_s:g} requests/s (burst "
                         f"{self.limiter.burst}) exceeded for key {key.key_id}; retry after {retry_after} s",
                    {"Retry-After": str(retry_after)})
        return key

    def authorize(self, token: str | None, scopes: Sequence[Scope]) -> ApiKey:
        key = self.authenticate(token)
        missing = [scope for scope in scopes if not key.allows(scope)]
        if missing:
            raise AuthError(403, f"this API key lacks the scope {', '.join(missing)}")
        return key

    def audit(self, key: ApiKey, action: str, what: str) -> None:
        if self.audit_log is not None:
            self.audit_log.record(key.key_id, action, what)

    def present(self, key: ApiKey, violations: Sequence[Violation], action: str) -> list[dict[str, object]]:
        """Violations as the key may see them; a disclosure of plates or evidence links is audited."""
        plates = key.allows(Scope.PLATES)
        items = [present_violation(v, plates=plates) for v in violations]
        if plates:
            disclosed = [v.violation_id for v in violations if discloses(v)]
            if disclosed:
                self.audit(key, action, "plates/evidence of violations " + ",".join(disclosed))
        return items

    def present_stream(self, key: ApiKey, violations: Iterator[Violation], action: str,
                       audit_every: int = 1000) -> Iterator[Violation]:
        """`present` for a streamed export: masked violations, or the disclosures audited as they go
        (also when the client stops reading half-way)."""
        if not key.allows(Scope.PLATES):
            yield from (masked_violation(v) for v in violations)
            return
        disclosed: list[str] = []
        try:
            for violation in violations:
                if discloses(violation):
                    disclosed.append(violation.violation_id)
                    if len(disclosed) >= audit_every:
                        self.audit(key, action, "plates/evidence of violations " + ",".join(disclosed))
                        disclosed = []
                yield violation
        finally:
            if disclosed:
                self.audit(key, action, "plates/evidence of violations " + ",".join(disclosed))
