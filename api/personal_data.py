"""Personal data in answers: every route that can return a plate or an evidence link shows it through here.

A reader without the `plates` scope gets every record masked (core/masking.py); a reader with it gets
the records as stored, and the request leaves one audit record naming the records that disclosed a plate
or a link (`plates/evidence of events e1,e2`), under the reader's key and `GET /v1/...` as the action.
Reads that disclosed nothing are not audited. tests/unit/test_personal_data_routes.py holds the list of
routes that carry personal data and fails when a new GET route is not classified there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Final, TypeVar

from fastapi import Depends, HTTPException
from starlette.requests import HTTPConnection

from api.access.control import AccessControl
from api.access.deps import AccessDep, ViolationReader
from api.access.keys import ApiKey, Scope
from core.masking import Masker

T = TypeVar("T")

# A streamed export writes an audit record per this many disclosing records (and one for the rest when
# it ends, also when the client stops reading half-way), so that one record stays a bounded size.
AUDIT_BATCH: Final = 1000


@dataclass(frozen=True)
class PersonalData:
    """What one request may see of plates and evidence links, and where its disclosures are audited."""

    access: AccessControl
    key: ApiKey
    action: str

    @property
    def plates(self) -> bool:
        return self.key.allows(Scope.PLATES)

    def show(self, records: Iterable[T], masker: Masker[T]) -> list[T]:
        """The records as this reader may see them; a disclosure is audited in one record."""
        if not self.plates:
            return [masker.mask(record)[0] for record in records]
        shown = list(records)
        self._audit(masker, [masker.identify(r) for r in shown if masker.mask(r)[1]])
        return shown

    def show_stream(self, records: Iterator[T], masker: Masker[T]) -> Iterator[T]:
        """`show` for a streamed answer (exports): masked as they go, or audited every AUDIT_BATCH."""
        if not self.plates:
            yield from (masker.mask(record)[0] for record in records)
            return
        disclosed: list[str] = []
        try:
            for record in records:
                if masker.mask(record)[1]:
                    disclosed.append(masker.identify(record))
                    if len(disclosed) >= AUDIT_BATCH:
                        self._audit(masker, disclosed)
                        disclosed = []
                yield record
        finally:
            self._audit(masker, disclosed)

    def _audit(self, masker: Masker[T], disclosed: list[str]) -> None:
        if disclosed:
            what = f"plates/evidence of {masker.name} " + ",".join(disclosed)
            self.access.audit(self.key, self.action, what)


def _action(connection: HTTPConnection) -> str:
    method = connection.scope.get("method", "GET")
    return f"{method} {connection.url.path}"


def _violation_data(connection: HTTPConnection, access: AccessDep, key: ViolationReader) -> PersonalData:
    return PersonalData(access, key, _action(connection))


def _requester(connection: HTTPConnection) -> ApiKey:
    """The key of a request its router's `require(...)` has already let through (authenticated, scoped
    and counted against its rate once); `require` keeps it on the request, so it is not checked twice."""
    key: ApiKey | None = getattr(connection.state, "api_key", None)
    if key is None:  # only when a route is mounted without its router's scope check: refuse, never guess
        raise HTTPException(401, "an API key is required", headers={"WWW-Authenticate": "Bearer"})
    return key


def _routed_data(connection: HTTPConnection, access: AccessDep) -> PersonalData:
    return PersonalData(access, _requester(connection), _action(connection))


# For routes that declare `ViolationReader` themselves (violations, exports).
ViolationData = Annotated[PersonalData, Depends(_violation_data)]
# For routes whose router is mounted with its scope (`require(Scope.READINGS_READ)`, admin) in api/app.py.
RoutedData = Annotated[PersonalData, Depends(_routed_data)]
