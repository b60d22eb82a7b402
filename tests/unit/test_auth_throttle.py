"""Unknown API keys are throttled per client address: 429 with Retry-After, counted in a metric, with a
bounded table. Time moves by an injected clock, never by sleeping."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from api.access.keys import Scope
from api.access.throttle import FailedAuthThrottle
from core.settings import ApiSettings, AuthMode
from tests.support.alerts import AlertApi, alert_api, bearer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_throttled_after_the_limit_until_its_window_ends() -> None:
    clock = Clock()
    throttle = FailedAuthThrottle(3, 60, clock=clock)
    for _ in range(3):
        assert throttle.retry_after_s("10.0.0.1") == 0
        throttle.record_failure("10.0.0.1")
        clock.now += 1
    assert throttle.retry_after_s("10.0.0.1") == pytest.approx(57)
    assert throttle.retry_after_s("10.0.0.2") == 0
    clock.now += 57
    assert throttle.retry_after_s("10.0.0.1") == 0
    throttle.record_failure("10.0.0.1")  # a new window: one failure, not four
    assert throttle.retry_after_s("10.0.0.1") == 0


def test_failures_spread_over_more_than_a_window_are_not_throttled() -> None:
    clock = Clock()
    throttle = FailedAuthThrottle(3, 60, clock=clock)
    for _ in range(10):
        throttle.record_failure("10.0.0.1")
        clock.now += 31  # two failures per window at most
    assert throttle.retry_after_s("10.0.0.1") == 0


def test_the_table_keeps_at_most_max_addresses_forgetting_the_least_recent() -> None:
    clock = Clock()
    throttle = FailedAuthThrottle(1, 60, max_addresses=100, clock=clock)
    for n in range(1000):
        throttle.record_failure(f"10.0.{n // 256}.{n % 256}")
    assert len(throttle) == 100
    assert throttle.retry_after_s("10.0.3.231") > 0  # the 1000th address: still throttled
    assert throttle.retry_after_s("10.0.0.0") == 0  # the first one: forgotten


@pytest.fixture
def api(tmp_path: Path) -> Iterator[AlertApi]:
    api = alert_api(tmp_path, api=ApiSettings(auth=AuthMode.REQUIRED, rate_limit_per_s=1000,
                                              rate_limit_burst=1000, auth_failure_limit=5,
                                              auth_failure_window_s=60))
    yield api
    api.close()


def refused(api: AlertApi, reason: str) -> float:
    value = api.services.metrics.registry.get_sample_value("citywatch_api_auth_refused_total",
                                                           {"reason": reason})
    return value or 0.0


def test_wrong_keys_from_one_address_get_429_then_that_address_recovers(api: AlertApi) -> None:
    clock = Clock()
    assert api.access.throttle is not None and api.access.throttle.limit == 5  # from the settings
    api.access.throttle = FailedAuthThrottle(5, 60, clock=clock)
    valid = bearer(api.key(Scope.VIOLATIONS_READ))
    attacker = TestClient(api.app, client=("203.0.113.7", 40000))
    neighbour = TestClient(api.app, client=("203.0.113.8", 40000))
    with attacker, neighbour:
        statuses = [attacker.get("/v1/violations", headers=bearer(f"cw_guess_{n}")).status_code
                    for n in range(8)]
        assert statuses == [401] * 5 + [429] * 3
        throttled = attacker.get("/v1/violations", headers=valid)  # even a good key, from that address
        assert throttled.status_code == 429 and throttled.headers["retry-after"] == "60"
        body = throttled.json()
        assert body["type"] == "urn:citywatch:problem:auth-throttled"
        assert body["detail"] == ("more than 5 unknown API keys from 203.0.113.7 within 60 s; "
                                  "retry after 60 s")
        assert neighbour.get("/v1/violations", headers=valid).status_code == 200
        assert (refused(api, "unknown_key"), refused(api, "throttled")) == (5, 4)

        clock.now += 45
        assert attacker.get("/v1/violations", headers=valid).headers["retry-after"] == "15"
        clock.now += 15
        assert attacker.get("/v1/violations", headers=valid).status_code == 200


def test_requests_without_a_key_are_not_counted_as_guesses(api: AlertApi) -> None:
    client = api.client()
    assert [client.get("/v1/violations").status_code for _ in range(20)] == [401] * 20
    assert client.get("/v1/violations", headers=bearer(api.key(Scope.VIOLATIONS_READ))).status_code == 200
    assert refused(api, "missing_key") == 20 and refused(api, "throttled") == 0


def test_the_websocket_stream_refuses_a_throttled_address_at_the_handshake(api: AlertApi) -> None:
    valid = bearer(api.key(Scope.VIOLATIONS_READ))
    attacker = TestClient(api.app, client=("203.0.113.9", 40000))
    with attacker:
        for n in range(5):
            with pytest.raises(WebSocketDenialResponse) as guessed:
                attacker.websocket_connect("/v1/ws/violations", headers=bearer(f"cw_guess_{n}")).__enter__()
            assert guessed.value.status_code == 401
        with pytest.raises(WebSocketDenialResponse) as throttled:
            attacker.websocket_connect("/v1/ws/violations", headers=valid).__enter__()
        assert throttled.value.status_code == 429
        assert throttled.value.headers["retry-after"] == "60"
        assert attacker.get("/v1/violations", headers=valid).status_code == 429  # the same table as HTTP
    assert refused(api, "unknown_key") == 5
