"""Webhook delivery health at /metrics: attempts by outcome, dead letters by reason, pending deliveries and
the receivers' answer time, with real HTTP receivers and the production dispatcher and store."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.access.keys import Scope
from api.alerts.filters import ViolationFilter
from api.alerts.webhooks.store import DeliveryStatus
from core.settings import WebhookSettings
from tests.support.alerts import AlertApi, alert_api, bearer, violation
from tests.support.servers import Receiver
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

# The receivers listen on 127.0.0.1: allowed here as for an on-premises receiver.
LOCAL = WebhookSettings(max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=2.0,
                        disable_after_failures=50, allowed_private_networks=("127.0.0.0/8",))


class Scraper:
    """Reads the webhook samples of the app's /metrics as Prometheus does, with a metrics:read key."""

    def __init__(self, api: AlertApi, client: TestClient) -> None:
        self.client = client
        self.headers = bearer(api.key(Scope.METRICS_READ, name="prometheus"))

    def samples(self) -> dict[str, float]:
        """name{labels} -> value."""
        response = self.client.get("/metrics", headers=self.headers)
        assert response.status_code == 200
        samples = {}
        for line in response.text.splitlines():
            if line.startswith("citywatch_webhook_"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def once(self, sample: str, value: float) -> dict[str, float]:
        """The samples once `sample` reached `value` (the dispatcher counts on its own thread)."""
        def reached() -> dict[str, float] | None:
            samples = self.samples()
            return samples if samples.get(sample) == value else None
        return wait_for(reached, message=f"{sample} to reach {value}")


def start(apis: list[AlertApi], tmp_path: Path,
          settings: WebhookSettings) -> tuple[AlertApi, TestClient, Scraper]:
    api = alert_api(tmp_path, webhooks=settings)
    apis.append(api)
    client = api.client()
    return api, client, Scraper(api, client)


def subscribe(api: AlertApi, client: TestClient, url: str) -> str:
    response = client.post("/v1/subscriptions", json={"url": url},
                           headers=bearer(api.key(Scope.SUBSCRIPTIONS_MANAGE)))
    assert response.status_code == 201, response.text
    subscription_id: str = response.json()["subscription_id"]
    return subscription_id


def test_retries_then_a_delivery_are_counted_and_timed(tmp_path, apis, receivers) -> None:
    api, client, scraper = start(apis, tmp_path, LOCAL)
    receiver = Receiver(status_for=lambda n: 500 if n < 2 else 204).start()
    receivers.append(receiver)
    sid = subscribe(api, client, receiver.url)
    api.feed.publish([violation(1)])
    wait_for(lambda: api.dispatcher.store.deliveries(sid, status=DeliveryStatus.DELIVERED),
             message="delivered after two failed attempts")

    metrics = scraper.once('citywatch_webhook_deliveries_total{outcome="delivered"}', 1)
    assert metrics['citywatch_webhook_deliveries_total{outcome="failed_attempt"}'] == 2
    assert metrics["citywatch_webhook_attempt_duration_seconds_count"] == 3
    assert metrics["citywatch_webhook_deliveries_pending"] == 0
    assert 'citywatch_webhook_deliveries_total{outcome="dead_lettered"}' not in metrics


def test_a_delivery_given_up_is_a_dead_letter_by_reason(tmp_path, apis, receivers) -> None:
    api, client, scraper = start(apis, tmp_path, LOCAL.model_copy(update={"max_attempts": 2}))
    receiver = Receiver(status_for=lambda n: 503).start()
    receivers.append(receiver)
    sid = subscribe(api, client, receiver.url)
    api.feed.publish([violation(1)])
    wait_for(lambda: api.dispatcher.store.deliveries(sid, status=DeliveryStatus.DEAD), message="dead letter")

    metrics = scraper.once('citywatch_webhook_dead_letters_total{reason="attempts_exhausted"}', 1)
    assert metrics['citywatch_webhook_deliveries_total{outcome="dead_lettered"}'] == 1
    assert metrics['citywatch_webhook_deliveries_total{outcome="failed_attempt"}'] == 2
    assert metrics["citywatch_webhook_deliveries_pending"] == 0


def test_a_refused_destination_is_counted_apart_and_sends_nothing(tmp_path, apis, receivers) -> None:
    # Accepted earlier (as if its host resolved to a public address then); now it is loopback.
    settings = LOCAL.model_copy(update={"max_attempts": 2, "allowed_private_networks": ()})
    api, _, scraper = start(apis, tmp_path, settings)
    receiver = Receiver().start()
    receivers.append(receiver)
    owner = api.key(Scope.SUBSCRIPTIONS_MANAGE).split("_")[1]  # cw_<key id>_<secret>
    subscription = api.dispatcher.create(url=receiver.url, filter=ViolationFilter(), secret=None,
                                         description="", owner_key_id=owner, plates=False)
    api.dispatcher.barrier()
    api.feed.publish([violation(1)])
    sid = subscription.subscription_id
    wait_for(lambda: api.dispatcher.store.deliveries(sid, status=DeliveryStatus.DEAD),
             message="refused delivery dead-lettered")

    metrics = scraper.once('citywatch_webhook_deliveries_total{outcome="refused_destination"}',
                           2)
    assert 'citywatch_webhook_deliveries_total{outcome="failed_attempt"}' not in metrics
    assert metrics["citywatch_webhook_attempt_duration_seconds_count"] == 0
    assert receiver.received() == []
