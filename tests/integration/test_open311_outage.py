"""Open311 while the PostgreSQL of keys and cases is down: the spec's error array with a 503 and
Retry-After, as the rest of the API answers an outage; once it is back, filing works again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.access.keys import Scope
from core.settings import RelationalKind, RelationalSettings
from tests.support.alerts import alert_api, bearer
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, which it stops and starts (the session's is shared)."""
    server = PostgresServer().start()
    yield server
    server.remove()


def test_an_outage_is_the_specs_503_and_filing_works_once_it_is_back(own_postgres: PostgresServer,
                                                                      tmp_path: Path) -> None:
    database = own_postgres.create_database()
    relational = RelationalSettings(kind=RelationalKind.POSTGRESQL,
                                    postgresql=database.model_copy(update={"connect_timeout_s": 1.0}))
    api = alert_api(tmp_path, relational=relational)
    try:
        client = api.client()
        writer = api.key(Scope.CASES_WRITE, Scope.CASES_READ)
        body = {"api_key": writer, "service_code": "sanitation-bin-overflow",
                "address_string": "Shennan Rd 1"}
        # Looked up once: the key is cached, so the outage is met by the cases' database itself.
        assert client.post("/open311/v2/requests.json", json=body).status_code == 201
        own_postgres.stop()
        for response in (client.post("/open311/v2/requests.json", json=body),
                         client.get("/open311/v2/requests.json", headers=bearer(writer))):
            assert (response.status_code, response.json()) == (503, [{"code": 503, "description": (
                "the cases' database cannot be reached; retry after 5 s")}])
            assert response.headers["Retry-After"] == "5"
        own_postgres.start()
        # The pool reconnects within a few attempts; each filed request is one row whatever came before.
        wait_for(lambda: client.post("/open311/v2/requests.json", json=body).status_code == 201, 30,
                 message="filing to work again")
        # Reading goes through the same pool: back with filing.
        assert client.get("/open311/v2/requests.json", headers=bearer(writer)).status_code == 200
        assert len(client.get("/open311/v2/requests.json", headers=bearer(writer)).json()) == 2
    finally:
        api.close()
