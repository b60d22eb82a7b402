"""Ingest over TLS with credentials, against a real Mosquitto set up like deploy/mosquitto: a password
per device and the ACL that lets each device publish on its own topic only."""

from __future__ import annotations

import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from core.settings import MqttTlsSettings
from ingest.mqtt_source import MqttSource
from tests.support.mosquitto_tls import TlsBroker, start_tls_broker
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

USERS = {"citywatch-ingest": "ingest-pass", "bin-0001": "bin-pass"}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[TlsBroker]:
    broker = start_tls_broker(tmp_path, USERS, clients=["bin-0001"])
    yield broker
    broker.stop()


@pytest.fixture
def sources() -> Iterator[list[MqttSource]]:
    started: list[MqttSource] = []
    yield started
    for source in started:
        source.stop()


def source(broker: TlsBroker, messages: list[tuple[str, bytes]], *, tls: MqttTlsSettings | None,
           password: str = "ingest-pass") -> MqttSource:
    return MqttSource(host="localhost", port=broker.port, client_id=f"ingest-{uuid.uuid4().hex[:8]}",
                      topics=["citywatch/events/#"], username="citywatch-ingest", password=password,
                      reconnect_min_s=0.1, reconnect_max_s=0.5, clean_session=True, tls=tls,
                      on_message=lambda topic, payload, _: messages.append((topic, payload)))


def device(broker: TlsBroker, device_id: str, password: str, *, client_cert: bool = False) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id)
    client.username_pw_set(device_id, password)
    certs = broker.certs
    client.tls_set(ca_certs=str(certs / "ca.crt"),
                   certfile=str(certs / f"{device_id}.crt") if client_cert else None,
                   keyfile=str(certs / f"{device_id}.key") if client_cert else None,
                   cert_reqs=ssl.CERT_REQUIRED)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, reason, p: connected.set() if not reason.is_failure else None
    client.connect("localhost", broker.port)
    client.loop_start()
    assert connected.wait(10), "device could not connect over TLS"
    return client


def test_ingest_receives_over_tls_and_the_acl_keeps_devices_to_their_own_topic(broker, sources) -> None:
    messages: list[tuple[str, bytes]] = []
    ingest = source(broker, messages, tls=MqttTlsSettings(enabled=True, ca_file=broker.certs / "ca.crt"))
    sources.append(ingest)
    ingest.start()
    wait_for(lambda: ingest.subscribed, 10, message="ingest subscribed over TLS")

    bin_1 = device(broker, "bin-0001", "bin-pass", client_cert=True)
    try:
        # Denied by the ACL (another device's topic): the broker drops it silently.
        bin_1.publish("citywatch/events/bin-0002", b"impersonation", qos=1).wait_for_publish(5)
        bin_1.publish("citywatch/events/bin-0001", b"own reading", qos=1).wait_for_publish(5)
        wait_for(lambda: messages, 10, message="the device's own message")
    finally:
        bin_1.disconnect()
        bin_1.loop_stop()
    assert messages == [("citywatch/events/bin-0001", b"own reading")]


def test_plain_text_and_a_wrong_password_do_not_get_in(broker, sources) -> None:
    plain: list[tuple[str, bytes]] = []
    no_tls = source(broker, plain, tls=None)
    sources.append(no_tls)
    no_tls.start()
    # The broker drops the plain-text connection during the TLS handshake and says so in its log.
    wait_for(lambda: "wrong version number" in broker.log.read_text(errors="replace"), 10,
             message="the broker to refuse plain text")
    assert not no_tls.connected and plain == []

    wrong = source(broker, [], tls=MqttTlsSettings(enabled=True, ca_file=broker.certs / "ca.crt"),
                   password="wrong")
    sources.append(wrong)
    wrong.start()
    wait_for(lambda: wrong.error, 10, message="refused credentials")
    assert "refused" in (wrong.error or "") and not wrong.connected


# paho-mqtt 2.2 drops the socket of a failed TLS handshake without closing it (a ResourceWarning when it
# is collected); the refusal itself is what this test checks.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_broker_certificate_from_another_ca_is_refused(broker, sources, tmp_path) -> None:
    other = start_tls_broker(tmp_path / "other", USERS, clients=[])
    other.stop()
    untrusted = source(broker, [], tls=MqttTlsSettings(enabled=True, ca_file=other.certs / "ca.crt"))
    sources.append(untrusted)
    untrusted.start()
    wait_for(lambda: untrusted.connect_attempts >= 2, 10, message="attempts with an untrusted certificate")
    assert not untrusted.connected
