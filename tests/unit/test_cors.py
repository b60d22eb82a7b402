"""`api.cors_origins` over real HTTP: a page on an allowed origin may call the API with its key (the
preflight is answered before any key is asked for) and read the headers it needs; a page on any other
origin gets no CORS header, so the browser keeps the answer from it; without the setting no CORS header
is sent at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.access.keys import Scope
from core.settings import ApiSettings, AuthMode
from tests.support.alerts import AlertApi, alert_api, bearer
from tests.support.served_app import served

CONSOLE = "https://console.city.example"
OTHER = "https://elsewhere.example"


def api_with(tmp_path: Path, origins: list[str]) -> AlertApi:
    return alert_api(tmp_path, api=ApiSettings(auth=AuthMode.REQUIRED, rate_limit_per_s=1000,
                                               rate_limit_burst=1000, cors_origins=origins))


@pytest.fixture
def console_api(tmp_path: Path) -> Iterator[tuple[AlertApi, httpx.Client]]:
    api = api_with(tmp_path, [CONSOLE])
    with served(api.app) as client:
        yield api, client
    api.close()


def preflight(client: httpx.Client, path: str, origin: str, headers: str = "authorization") -> httpx.Response:
    return client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": "GET",
                                         "Access-Control-Request-Headers": headers})


def test_a_preflight_from_the_allowed_origin_may_send_the_key_and_resume_the_stream(console_api):
    _, client = console_api
    answer = preflight(client, "/v1/violations", CONSOLE)
    assert answer.status_code == 200  # no key is asked for a preflight
    assert answer.headers["access-control-allow-origin"] == CONSOLE
    allowed = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "x-api-key", "last-event-id"} <= allowed
    assert "GET" in answer.headers["access-control-allow-methods"]
    stream = preflight(client, "/v1/stream/violations", CONSOLE, "authorization, last-event-id")
    assert stream.status_code == 200 and stream.headers["access-control-allow-origin"] == CONSOLE


def test_a_preflight_from_another_origin_gets_no_cors_header(console_api):
    _, client = console_api
    answer = preflight(client, "/v1/violations", OTHER)
    assert "access-control-allow-origin" not in answer.headers
    assert answer.status_code >= 400


def test_a_get_from_the_allowed_origin_is_readable_and_others_are_not(console_api):
    api, client = console_api
    key = api.key(Scope.VIOLATIONS_READ)
    allowed = client.get("/v1/violations", headers={"Origin": CONSOLE, **bearer(key)})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == CONSOLE
    exposed = {h.strip().lower() for h in allowed.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "retry-after"} <= exposed
    assert "access-control-allow-credentials" not in allowed.headers  # keys travel in a header
    other = client.get("/v1/violations", headers={"Origin": OTHER, **bearer(key)})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    # A refusal is readable by the allowed page too, so it can tell the user the key is missing.
    refused = client.get("/v1/violations", headers={"Origin": CONSOLE})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == CONSOLE


def test_without_the_setting_no_cors_header_is_sent(tmp_path: Path):
    api = api_with(tmp_path, [])
    try:
        with served(api.app) as client:
            key = api.key(Scope.VIOLATIONS_READ)
            got = client.get("/v1/violations", headers={"Origin": CONSOLE, **bearer(key)})
            assert got.status_code == 200
            assert not [name for name in got.headers if name.lower().startswith("access-control-")]
            assert "access-control-allow-origin" not in preflight(client, "/v1/violations", CONSOLE).headers
    finally:
        api.close()


def test_any_origin_when_configured_so(tmp_path: Path):
    api = api_with(tmp_path, ["*"])
    try:
        with served(api.app) as client:
            key = api.key(Scope.VIOLATIONS_READ)
            got = client.get("/v1/violations", headers={"Origin": OTHER, **bearer(key)})
            assert got.headers["access-control-allow-origin"] == "*"
    finally:
        api.close()
