"""Subscription bodies are strict: a misspelt key or violation type is refused with the closest valid name
instead of subscribing to everything or nothing; and a signing secret can be rotated, the previous one
still signing for a grace period. Real receivers, the production dispatcher and store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.access.keys import Scope
from api.alerts.webhooks.signing import verify
from core.settings import WebhookSettings
from tests.support.alerts import AlertApi, alert_api, bearer, violation
from tests.support.servers import Receiver
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

LOCAL = WebhookSettings(backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=2.0,
                        allowed_private_networks=("127.0.0.0/8",))


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[AlertApi, TestClient, dict[str, str], Receiver]]:
    api = alert_api(tmp_path, webhooks=LOCAL)
    receiver = Receiver().start()
    yield api, api.client(), bearer(api.key(Scope.SUBSCRIPTIONS_MANAGE)), receiver
    receiver.stop()
    api.close()


@pytest.mark.parametrize(("body", "said"), [
    ({"filtr": {"type": ["bin_overflow"]}}, "unknown field 'filtr'; did you mean 'filter'?"),
    ({"filter": {"typ": ["bin_overflow"]}}, "unknown field 'typ'; did you mean 'type'?"),
    ({"filter": {"type": ["bin_overflw"]}},
     "unknown violation type 'bin_overflw'; did you mean 'bin_overflow'?"),
    ({"filter": {"severity": ["hihg"]}}, "unknown severity 'hihg'; did you mean 'high'?"),
    ({"secrte": "a-secret-of-enough-length"}, "unknown field 'secrte'; did you mean 'secret'?"),
])
def test_a_misspelt_subscription_is_refused_with_the_closest_name(setup, body: dict[str, Any],
                                                                  said: str) -> None:
    _, client, headers, receiver = setup
    response = client.post("/v1/subscriptions", json={"url": receiver.url, **body}, headers=headers)
    assert response.status_code == 422 and said in response.text, response.text
    assert client.get("/v1/subscriptions", headers=headers).json() == []


def test_a_misspelt_change_is_refused_and_changes_nothing(setup) -> None:
    _, client, headers, receiver = setup
    body = {"url": receiver.url, "filter": {"type": ["bin_overflow"]}}
    created = client.post("/v1/subscriptions", json=body, headers=headers).json()
    sid = created["subscription_id"]
    for body, said in [({"enabeld": False}, "unknown field 'enabeld'; did you mean 'enabled'?"),
                       ({"filter": {"type": ["bin_ovreflow"]}}, "did you mean 'bin_overflow'?")]:
        response = client.patch(f"/v1/subscriptions/{sid}", json=body, headers=headers)
        assert response.status_code == 422 and said in response.text, response.text
    assert client.get(f"/v1/subscriptions/{sid}", headers=headers).json() == {
        key: value for key, value in created.items() if key != "secret"}


def test_a_rotated_secret_signs_next_to_the_previous_one_for_the_grace_period(setup) -> None:
    api, client, headers, receiver = setup
    created = client.post("/v1/subscriptions", json={"url": receiver.url}, headers=headers).json()
    sid, old = created["subscription_id"], created["secret"]
    assert created["previous_secret_expires_time_ms"] is None

    rotated = client.post(f"/v1/subscriptions/{sid}/secret", headers=headers)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != old
    assert rotated.json()["previous_secret_expires_time_ms"] > created["created_time_ms"] + 23 * 3600 * 1000
    assert "secret" not in client.get(f"/v1/subscriptions/{sid}", headers=headers).json()

    api.feed.publish([violation(1)])
    [during] = wait_for(receiver.received, message="a delivery in the grace period")
    header = during.headers["X-Citywatch-Signature"]
    assert header.count("v1=") == 2
    # A receiver verifies with whichever secret it holds: both work while the grace period lasts.
    assert verify(new, header, during.body) and verify(old, header, during.body)

    chosen = "a-receiver-chosen-secret-0123456789"
    at_once = client.post(f"/v1/subscriptions/{sid}/secret", json={"secret": chosen, "grace_s": 0},
                          headers=headers)
    assert at_once.json()["secret"] == chosen and at_once.json()["previous_secret_expires_time_ms"] is None
    api.feed.publish([violation(2)])
    after = wait_for(lambda: receiver.received()[1:], message="a delivery after the rotation")[0]
    header = after.headers["X-Citywatch-Signature"]
    assert header.count("v1=") == 1 and verify(chosen, header, after.body)
    assert not verify(new, header, after.body)


def test_a_rotation_is_strict_and_only_for_the_owner(setup) -> None:
    api, client, headers, receiver = setup
    created = client.post("/v1/subscriptions", json={"url": receiver.url}, headers=headers)
    sid = created.json()["subscription_id"]
    misspelt = client.post(f"/v1/subscriptions/{sid}/secret", json={"grace": 60}, headers=headers)
    assert misspelt.status_code == 422 and "did you mean 'grace_s'?" in misspelt.text
    other = bearer(api.key(Scope.SUBSCRIPTIONS_MANAGE, name="other"))
    assert client.post(f"/v1/subscriptions/{sid}/secret", headers=other).status_code == 404


def test_a_misspelt_query_parameter_of_the_delivery_log_is_refused(setup) -> None:
    _, client, headers, receiver = setup
    created = client.post("/v1/subscriptions", json={"url": receiver.url}, headers=headers)
    sid = created.json()["subscription_id"]
    response = client.get(f"/v1/subscriptions/{sid}/deliveries", params={"statsu": "dead"}, headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"] == [{"location": "query", "field": "statsu", "closest": "status",
                                          "message": "unknown parameter; did you mean `status`?"}]
    assert client.get(f"/v1/subscriptions/{sid}/deliveries", params={"status": "dead"},
                      headers=headers).json() == []
