"""Authentication, scopes and rate limits as one object the API asks on every request."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path

from api.access.audit import AuditLog
from api.access.keys import ApiKey, KeyStore, Scope, open_access_db
from api.access.ratelimit import RateLimiter
from api.access.throttle import FailedAuthThrottle
from core.masking import discloses, masked_violation, present_violation
from core.models import Violation
from core.settings import ApiSettings, AuthMode, RelationalSettings
from store.relational import Database

# Who an unauthenticated request is when auth is disabled (local demo): everything, audited as such.
ANONYMOUS = ApiKey(key_id="anonymous", name="auth disabled", scopes=frozenset({Scope.ADMIN}),
                   created_time_ms=0)


class AuthReason(StrEnum):
    """Why a request was refused; the label of the refusal metric and the problem type of the answer."""

    MISSING_KEY = "missing_key"
    UNKNOWN_KEY = "unknown_key"
    THROTTLED = "throttled"  # too many unknown keys from the client's address
    RATE_LIMITED = "rate_limited"
    MISSING_SCOPE = "missing_scope"


class AuthError(Exception):
    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None, *,
                 reason: AuthReason) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers or {}
        self.reason = reason


def _retry_after(wait_s: float) -> int:
    return max(1, int(wait_s + 0.999))


class AccessControl:
    def __init__(self, mode: AuthMode, keys: KeyStore | None, audit: AuditLog | None,
                 limiter: RateLimiter | None, throttle: FailedAuthThrottle | None = None) -> None:
        if mode is AuthMode.REQUIRED and keys is None:
            raise ValueError("auth required needs a key store")
        self.mode = mode
        self.keys = keys
        self.audit_log = audit
        self.limiter = limiter
        self.throttle = throttle
        self._database: Database | None = None

    @classmethod
    def open(cls) -> AccessControl:
        """No keys, no limits, no audit: for API instances built in-process by tests and tools."""
        return cls(AuthMode.DISABLED, None, None, None)

    @classmethod
    def in_directory(cls, data_dir: Path, settings: ApiSettings,
                     relational: RelationalSettings | None = None) -> AccessControl:
        """Keys and audit log in `data_dir` (SQLite), or where `relational` says (PostgreSQL)."""
        database = open_access_db(data_dir, relational)
        required = settings.auth is AuthMode.REQUIRED
        limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        throttle = FailedAuthThrottle(settings.auth_failure_limit, settings.auth_failure_window_s)
        access = cls(settings.auth, KeyStore(database), AuditLog(database),
                     limiter if required else None, throttle if required else None)
        access._database = database
        return access

    def close(self) -> None:
        """Closes the keys' and audit log's database, when `in_directory` opened it."""
        if self._database is not None:
            self._database.close()
            self._database = None

    def authenticate(self, token: str | None, client: str | None = None) -> ApiKey:
        """The key of `token`; `client` (the caller's address) is throttled after too many unknown keys."""
        if self.mode is AuthMode.DISABLED:
            return ANONYMOUS
        assert self.keys is not None
        if self.throttle is not None and client is not None:
            wait_s = self.throttle.retry_after_s(client)
            if wait_s > 0:
                retry_after = _retry_after(wait_s)
                raise AuthError(
                    429, f"more than {self.throttle.limit} unknown API keys from {client} within "
                         f"{self.throttle.window_s:g} s; retry after {retry_after} s",
                    {"Retry-After": str(retry_after)}, reason=AuthReason.THROTTLED)
        if not token:
            raise AuthError(401, "an API key is required: send it as `Authorization: Bearer <key>` "
                                 "or `X-API-Key: <key>`", {"WWW-Authenticate": "Bearer"},
                            reason=AuthReason.MISSING_KEY)
        key = self.keys.verify(token)
        if key is None:
            if self.throttle is not None and client is not None:
                self.throttle.record_failure(client)
            raise AuthError(401, "the API key is unknown or revoked", {"WWW-Authenticate": "Bearer"},
                            reason=AuthReason.UNKNOWN_KEY)
        if self.limiter is not None:
            wait_s = self.limiter.acquire(key.key_id)
            if wait_s > 0:
                retry_after = _retry_after(wait_s)
                raise AuthError(
                    429, f"rate limit of {self.limiter.rate_per_s:g} requests/s (burst "
                         f"{self.limiter.burst}) exceeded for key {key.key_id}; retry after {retry_after} s",
                    {"Retry-After": str(retry_after)}, reason=AuthReason.RATE_LIMITED)
        return key

    def authorize(self, token: str | None, scopes: Sequence[Scope], client: str | None = None) -> ApiKey:
        key = self.authenticate(token, client)
        missing = [scope for scope in scopes if not key.allows(scope)]
        if missing:
            raise AuthError(403, f"this API key lacks the scope {', '.join(missing)}",
                            reason=AuthReason.MISSING_SCOPE)
        return key

    def audit(self, key: ApiKey, action: str, what: str) -> None:
        if self.audit_log is not None:
            self.audit_log.record(key.key_id, action, what)

    def present(self, key: ApiKey, violations: Sequence[Violation], action: str) -> list[dict[str, object]]:
        """Violations as the key may see them; a disclosure of plates or evidence links is audited."""
        plates = key.allows(Scope.PLATES)
        items = [present_violation(v, plates=plates) for v in violations]
        if plates:
            self.audit_disclosures(key, violations, action)
        return items

    def audit_disclosures(self, key: ApiKey, violations: Iterable[Violation], action: str) -> None:
        """Audit under `key` the violations whose plates or evidence links it is shown unmasked."""
        self._audit_disclosed(key, action, [v.violation_id for v in violations if discloses(v)])

    def _audit_disclosed(self, key: ApiKey, action: str, violation_ids: list[str]) -> None:
        if violation_ids:
            self.audit(key, action, "plates/evidence of violations " + ",".join(violation_ids))

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
                        self._audit_disclosed(key, action, disclosed)
                        disclosed = []
                yield violation
        finally:
            self._audit_disclosed(key, action, disclosed)
