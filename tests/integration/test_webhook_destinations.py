"""Where webhooks may go: private, loopback, link-local and metadata destinations are refused when a
subscription is made and again at every delivery, redirects are not followed, and the delivery log
never shows what a receiver answered. Real HTTP servers on 127.0.0.1, real DNS resolution of localhost.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from api.access.keys import Scope
from api.alerts.filters import ViolationFilter
from api.alerts.webhooks.store import DeliveryStatus
from core.settings import WebhookSettings
from tests.support.alerts import AlertApi, alert_api, bearer, violation
from tests.support.servers import Receiver
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

STRICT = WebhookSettings(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02, timeout_s=2.0)
LOCAL = WebhookSettings(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02, timeout_s=2.0,
                        allowed_private_networks=("127.0.0.0/8",))


class ScriptedServer:
    """Answers every POST with a fixed status, headers and body, and counts what it received."""

    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.hits = 0
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server_self.hits += 1
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start(apis: list[AlertApi], tmp_path: Path, settings: WebhookSettings) -> AlertApi:
    api = alert_api(tmp_path, webhooks=settings)
    apis.append(api)
    return api


@pytest.mark.parametrize(("url", "said"), [
    ("http://127.0.0.1:8080/hook", "127.0.0.1 is a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata.google.internal is a cloud metadata"),
    ("http://[::1]:8080/hook", "::1 is a loopback address"),
    ("http://0.0.0.0:8080/hook", "0.0.0.0 is an unspecified address"),
    ("http://localhost:8080/hook", "localhost resolves to"),
    ("http://10.20.30.40/hook", "10.20.30.40 is a private address"),
    ("http://[::ffff:127.0.0.1]/hook", "::ffff:127.0.0.1 is a loopback address"),
    ("http://100.64.0.1/hook", "100.64.0.1 is a reserved or shared address"),
])
def test_a_subscription_to_a_private_or_metadata_address_is_refused(tmp_path, apis, url, said) -> None:
    api = start(apis, tmp_path, STRICT)
    client = api.client()
    headers = bearer(api.key(Scope.SUBSCRIPTIONS_MANAGE))
    response = client.post("/v1/subscriptions", json={"url": url}, headers=headers)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert said in detail
    if "metadata service" not in detail:
        assert "alerts.webhooks.allowed_private_networks" in detail
    assert client.get("/v1/subscriptions", headers=headers).json() == []


def test_an_allowed_network_opens_only_that_network_and_a_url_change_is_checked_too(tmp_path, apis) -> None:
    api = start(apis, tmp_path, LOCAL)
    client = api.client()
    headers = bearer(api.key(Scope.SUBSCRIPTIONS_MANAGE))
    created = client.post("/v1/subscriptions", json={"url": "http://127.0.0.1:8080/hook"}, headers=headers)
    assert created.status_code == 201, created.text
    sid = created.json()["subscription_id"]
    assert client.post("/v1/subscriptions", json={"url": "http://[::1]:8080/hook"},
                       headers=headers).status_code == 422
    moved = client.patch(f"/v1/subscriptions/{sid}", json={"url": "http://169.254.169.254/"}, headers=headers)
    assert moved.status_code == 422 and "169.254.169.254 is a link-local address" in moved.json()["detail"]
    assert client.get(f"/v1/subscriptions/{sid}", headers=headers).json()["url"] == "http://127.0.0.1:8080/hook"


def test_a_destination_that_turned_private_after_creation_is_refused_at_delivery(tmp_path, apis) -> None:
    # Subscriptions accepted earlier (as if their host resolved to a public address then): one by name,
    # resolved at delivery, one by literal address. Delivery checks again and sends nothing.
    api = start(apis, tmp_path, STRICT)
    receiver = Receiver().start()
    try:
        port = receiver.url.split(":")[2].split("/")[0]
        owner = api.key(Scope.SUBSCRIPTIONS_MANAGE).split("_")[1]  # cw_<key id>_<secret>
        by_name = api.dispatcher.create(url=f"http://localhost:{port}/hook", filter=ViolationFilter(),
                                        secret=None, description="", owner_key_id=owner, plates=False)
        literal = api.dispatcher.create(url=receiver.url, filter=ViolationFilter(), secret=None,
                                        description="", owner_key_id=owner, plates=False)
        api.dispatcher.barrier()
        api.feed.publish([violation(1)])
        for subscription, said in ((by_name, "localhost resolves to"), (literal, "127.0.0.1 is a loopback")):
            [dead] = wait_for(lambda s=subscription: api.dispatcher.store.deliveries(
                s.subscription_id, status=DeliveryStatus.DEAD), message="refused deliveries dead-lettered")
            assert dead.last_error is not None and said in dead.last_error
            assert "webhook destination refused" in dead.last_error and dead.last_status_code is None
        assert receiver.received() == []
    finally:
        receiver.stop()


def test_a_redirect_is_a_failed_delivery_and_is_not_followed(tmp_path, apis) -> None:
    api = start(apis, tmp_path, LOCAL)
    client = api.client()
    headers = bearer(api.key(Scope.SUBSCRIPTIONS_MANAGE))
    target = ScriptedServer(200)
    redirecting = ScriptedServer(307, headers={"Location": target.url})
    try:
        sid = client.post("/v1/subscriptions", json={"url": redirecting.url},
                          headers=headers).json()["subscription_id"]
        api.feed.publish([violation(1)])
        [dead] = wait_for(lambda: client.get(f"/v1/subscriptions/{sid}/dead-letters", headers=headers).json(),
                          message="the redirected delivery dead-lettered")
        assert dead["last_status_code"] == 307 and "redirects are not followed" in dead["last_error"]
        assert redirecting.hits == 2 and target.hits == 0
    finally:
        target.stop()
        redirecting.stop()


def test_the_delivery_log_shows_status_and_timing_but_never_the_answer(tmp_path, apis) -> None:
    api = start(apis, tmp_path, LOCAL)
    client = api.client()
    headers = bearer(api.key(Scope.SUBSCRIPTIONS_MANAGE))
    answering = ScriptedServer(500, body=b'{"aws_secret_access_key": "AKIA-LEAKED"}')
    try:
        sid = client.post("/v1/subscriptions", json={"url": answering.url},
                          headers=headers).json()["subscription_id"]
        api.feed.publish([violation(1)])
        wait_for(lambda: client.get(f"/v1/subscriptions/{sid}/dead-letters", headers=headers).json(),
                 message="the failed delivery")
        response = client.get(f"/v1/subscriptions/{sid}/deliveries", headers=headers)
        [logged] = response.json()
        assert logged["last_status_code"] == 500 and logged["last_error"] == "HTTP 500"
        assert isinstance(logged["last_duration_ms"], int) and logged["last_duration_ms"] >= 0
        assert "AKIA" not in response.text
    finally:
        answering.stop()
