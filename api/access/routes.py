"""Admin endpoints: API keys (created, listed, revoked) and the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from api.access.deps import AccessDep, require
from api.access.keys import ApiKey, KeyStore, LastAdminKey, Scope
from api.problems import CONFLICT, LAST_ADMIN_KEY, NOT_FOUND, ProblemError, problem_response_doc

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require(Scope.ADMIN))])


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="Who or what uses the key.")
    scopes: list[Scope] = Field(min_length=1)


class KeyOut(BaseModel):
    key_id: str
    name: str
    scopes: list[Scope]
    created_time_ms: int
    revoked: bool


class KeyCreated(KeyOut):
    token: str = Field(description="The key itself, shown only now; only its SHA-256 is stored.")


class AuditOut(BaseModel):
    id: int
    time_ms: int
    key_id: str
    action: str
    what: str


def _key_out(key: ApiKey) -> KeyOut:
    return KeyOut(key_id=key.key_id, name=key.name, scopes=sorted(key.scopes),
                  created_time_ms=key.created_time_ms, revoked=key.revoked)


_NO_KEYS = problem_response_doc("API keys are not used: this instance runs with api.auth: disabled")


def _keys(access: AccessDep) -> KeyStore:
    if access.keys is None:
        raise ProblemError(CONFLICT, "API keys are not used: this instance runs with api.auth: disabled")
    return access.keys


KeysDep = Annotated[KeyStore, Depends(_keys)]


@router.post("/keys", status_code=201, response_model=KeyCreated, summary="Create an API key",
             responses={409: _NO_KEYS})
def create_key(body: KeyIn, keys: KeysDep) -> KeyCreated:
    key, token = keys.create(body.name, frozenset(body.scopes))
    return KeyCreated(**_key_out(key).model_dump(), token=token)


@router.get("/keys", response_model=list[KeyOut], summary="List API keys (never their tokens)",
            responses={409: _NO_KEYS})
def list_keys(keys: KeysDep) -> list[KeyOut]:
    return [_key_out(key) for key in keys.list()]


@router.delete(
    "/keys/{key_id}", status_code=204, summary="Revoke an API key",
    description="The last active admin key cannot be revoked (409): create another admin key first.",
    responses={404: problem_response_doc("No active key with that id"),
               409: problem_response_doc("The last active admin key, or API keys are not used")})
def revoke_key(key_id: str, keys: KeysDep) -> None:
    try:
        revoked = keys.revoke(key_id, keep_an_admin=True)
    except LastAdminKey as exc:
        raise ProblemError(LAST_ADMIN_KEY, str(exc)) from None
    if not revoked:
        raise ProblemError(NOT_FOUND, f"no active key {key_id!r}")


@router.get("/audit", response_model=list[AuditOut], summary="Reads of plates and evidence, newest first")
def audit_log(access: AccessDep,
              key_id: Annotated[str | None, Query(description="Only this key.")] = None,
              before: Annotated[int | None, Query(description="Audit id to page before.")] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditOut]:
    if access.audit_log is None:
        return []
    records = access.audit_log.query(key_id=key_id, before_id=before, limit=limit)
    return [AuditOut(id=r.id, time_ms=r.time_ms, key_id=r.key_id, action=r.action, what=r.what)
            for r in records]
