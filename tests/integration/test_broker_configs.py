"""The shipped Mosquitto configurations keep ingest's QoS 1 session through the outages docs/deploy.md
promises: a real Mosquitto runs each file as shipped, with only its ports, bind addresses and file
locations moved into a temporary directory.

- deploy/config/mosquitto.conf (compose), with the certificates and password file its `mqtt-secrets`
  step makes: only registered devices, ingest and the health check get in. The real `citywatch ingest`
  (to a Kafka-protocol broker) is killed -9 for 20 s while a device publishes 100 msg/s; every message
  reaches Kafka after it restarts (the old limit of 1,000 queued messages dropped 1,173 of 5,000).
- deploy/mosquitto/mosquitto.conf (TLS, on a host): Mosquitto itself is killed -9 twice, each time with
  acknowledged messages queued for an offline subscriber, and restarted: none is lost. The subscriber
  stands in for ingest: the same persistent session (client id, clean_session off, QoS 1) in a process of
  its own that records each message before acknowledging it.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import paho.mqtt.client as mqtt
import pytest
from kafka import KafkaConsumer, TopicPartition

from core.models import Event
from core.settings import KafkaSettings
from ingest.embedded_broker import find_mosquitto, free_port, wait_for_port
from tests.support.process import REPO, bins
from tests.support.roles import RoleProcess
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

COMPOSE_CONFIG = REPO / "deploy" / "config" / "mosquitto.conf"
TLS_CONFIG = REPO / "deploy" / "mosquitto" / "mosquitto.conf"
ACL = REPO / "deploy" / "mosquitto" / "acl.example"
GEN_CERTS = REPO / "deploy" / "mosquitto" / "gen-test-certs.sh"
COMPOSE_SECRETS = REPO / "deploy" / "scripts" / "compose-mqtt-secrets.sh"

INGEST = "citywatch-ingest"
DEVICE = "bin-0001"
PASSWORDS = {INGEST: "ingest-secret", DEVICE: "bin-secret"}
RATE_PER_S = 100

# The stand-in for ingest: persistent session, QoS 1, each message written (and flushed) before paho
# acknowledges it, so whatever the broker counts as delivered is in the file.
SUBSCRIBER = """
import sys, paho.mqtt.client as mqtt
port, out, ready, ca, cert, key, password = sys.argv[1:8]
sink = open(out, "a")
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="citywatch-ingest", clean_session=False,
                     protocol=mqtt.MQTTv311)
client.tls_set(ca_certs=ca, certfile=cert or None, keyfile=key or None)
if password:
    client.username_pw_set("citywatch-ingest", password)
def on_connect(c, userdata, flags, reason, properties):
    c.subscribe("citywatch/events/#", qos=1)
def on_subscribe(c, userdata, mid, reasons, properties):
    open(ready, "w").close()
def on_message(c, userdata, message):
    sink.write(message.payload.decode() + "\\n")
    sink.flush()
client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
client.connect("127.0.0.1", int(port), keepalive=30)
client.loop_forever()
"""


@dataclass
class Broker:
    """Mosquitto on a rewritten copy of a shipped configuration; restartable on the same ports and
    persistence directory."""

    config: Path
    port: int  # the listener the test connects to
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        binary = find_mosquitto()
        assert binary is not None
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([binary, "-c", str(self.config)], stdout=out,
                                            stderr=subprocess.STDOUT)
        if not wait_for_port("127.0.0.1", self.port, 10, alive=lambda: self.process.poll() is None):
            raise AssertionError(f"mosquitto did not start:\n{self.log.read_text(errors='replace')}")
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@dataclass
class Subscriber:
    """The persistent-session subscriber in its own process, killed with SIGKILL like a crashed ingest."""

    port: int
    workdir: Path
    ca: Path
    cert: Path | None = None
    key: Path | None = None
    password: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def received_file(self) -> Path:
        return self.workdir / "received.txt"

    def start(self) -> Subscriber:
        ready = self.workdir / "subscribed"
        ready.unlink(missing_ok=True)
        log = (self.workdir / "subscriber.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER, str(self.port), str(self.received_file), str(ready),
             str(self.ca), str(self.cert or ""), str(self.key or ""), self.password],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: ready.exists() or self.process.poll() is not None, 15, 0.05, "the subscriber")
        assert self.process.poll() is None, (self.workdir / "subscriber.log").read_text()
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def received(self) -> set[int]:
        if not self.received_file.exists():
            return set()
        return {int(line) for line in self.received_file.read_text().split()}


@dataclass
class Device:
    """bin-0001 publishing numbered QoS 1 messages on its own topic; paho resends what the broker has not
    acknowledged when it reconnects, as a device's MQTT client does."""

    port: int
    ca: Path
    native: bool = False  # publish the native JSON format (for the real ingest) instead of bare numbers
    client: mqtt.Client = field(init=False)
    sent: list[int] = field(default_factory=list)  # message ids
    acked: set[int] = field(default_factory=set)   # message ids the broker acknowledged (PUBACK)
    next_number: int = 0
    start_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def __post_init__(self) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=DEVICE, clean_session=False,
                                  protocol=mqtt.MQTTv311)
        self.client.tls_set(ca_certs=str(self.ca))
        self.client.username_pw_set(DEVICE, PASSWORDS[DEVICE])
        self.client.reconnect_delay_set(0.1, 0.5)
        # Published while the broker is down: paho keeps the message and sends it on reconnecting.
        self.client.on_publish = lambda client, userdata, mid, reason, properties: self.acked.add(mid)
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()

    def publish(self, count: int, rate_per_s: float = RATE_PER_S) -> None:
        """`count` messages at `rate_per_s`."""
        start = time.monotonic()
        for n in range(count):
            delay = start + n / rate_per_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            info = self.client.publish(f"citywatch/events/{DEVICE}", self.payload(self.next_number), qos=1)
            self.sent.append(info.mid)
            self.next_number += 1

    def payload(self, number: int) -> str:
        if not self.native:
            return str(number)
        # A distinct time per message: each is its own event, not a duplicate of the previous one.
        return json.dumps({"device_id": DEVICE, "kind": "bin", "time": self.start_ms + number,
                           "attributes": {"fill_pct": 10.0, "n": number}})

    def acknowledged(self) -> bool:
        return self.acked.issuperset(self.sent)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def shipped(config: Path, workdir: Path, paths: dict[str, str], ports: dict[int, int]) -> Path:
    """The shipped file with its listener ports and the listed paths moved; every other line as is."""
    text = config.read_text()
    for shipped_path, test_path in paths.items():
        assert shipped_path in text, f"{config} no longer mentions {shipped_path}"
        text = text.replace(shipped_path, test_path)
    for shipped_port, test_port in ports.items():
        text, found = re.subn(rf"^listener {shipped_port} 0\.0\.0\.0$", f"listener {test_port} 127.0.0.1",
                              text, flags=re.M)
        assert found == 1, f"{config} has no `listener {shipped_port} 0.0.0.0`"
    text = re.sub(r"^log_dest \w+$", "log_dest stderr", text, flags=re.M)
    # Mosquitto started as root drops to this user, which must own the temporary files.
    text = f"user {pwd.getpwuid(os.geteuid()).pw_name}\n{text}"
    rewritten = workdir / config.name
    rewritten.write_text(text)
    return rewritten


@pytest.fixture
def tools(tmp_path: Path) -> None:
    if None in (find_mosquitto(), shutil.which("openssl"), shutil.which("mosquitto_passwd")):
        pytest.fail("mosquitto, mosquitto_passwd and openssl are needed; run `make test`, which installs "
                    "them", pytrace=False)
    (tmp_path / "data").mkdir()  # the broker's persistence directory


@pytest.fixture
def secrets(tmp_path: Path, tools: None) -> Path:
    """A CA, the broker's certificate and passwords for ingest and bin-0001 (docs/security.md's steps)."""
    certs = tmp_path / "secrets"
    subprocess.run([str(GEN_CERTS), str(certs), "localhost", INGEST], check=True, capture_output=True)
    for n, (user, password) in enumerate(PASSWORDS.items()):
        flags = ["-c", "-b"] if n == 0 else ["-b"]
        subprocess.run(["mosquitto_passwd", *flags, str(certs / "passwd"), user, password], check=True,
                       capture_output=True)
    return certs


@pytest.fixture
def cleanup() -> Iterator[list[Broker | Subscriber | Device]]:
    started: list[Broker | Subscriber | Device] = []
    yield started
    for thing in reversed(started):
        if isinstance(thing, Device):
            thing.close()
        elif isinstance(thing, Broker):
            if thing.process is not None and thing.process.poll() is None:
                thing.kill()
        else:
            thing.kill()


def wait_until_all_received(subscriber: Subscriber, device: Device, timeout_s: float) -> set[int]:
    """The numbers the device published that the subscriber never got, once all are acknowledged."""
    wait_for(device.acknowledged, timeout_s, 0.1, "the broker to acknowledge every message")
    published = set(range(device.next_number))
    deadline = time.monotonic() + timeout_s
    while not published <= subscriber.received() and time.monotonic() < deadline:
        time.sleep(0.1)
    return published - subscriber.received()


@pytest.fixture
def compose_secrets(tmp_path: Path, tools: None) -> Path:
    """What the compose file's mqtt-secrets step makes (its script run for real), plus bin-0001's
    password added as docs/deploy.md says."""
    root = tmp_path / "compose-secrets"
    uid = str(os.geteuid())
    run = subprocess.run(["sh", str(COMPOSE_SECRETS)], capture_output=True, text=True, check=True,
                         env={**os.environ, "SECRETS_ROOT": str(root), "MQTT_SERVER_NAME": "localhost",
                              "MOSQUITTO_UID": uid, "CITYWATCH_UID": uid})
    assert "new CA and certificates" in run.stdout
    subprocess.run(["mosquitto_passwd", "-b", str(root / "broker" / "passwd"), DEVICE, PASSWORDS[DEVICE]],
                   check=True, capture_output=True)
    return root


def start_compose_broker(tmp_path: Path, compose_secrets: Path) -> tuple[Broker, int, int]:
    devices_port, ingest_port = free_port(), free_port()
    config = shipped(COMPOSE_CONFIG, tmp_path, {
        "/mosquitto/secrets/": f"{compose_secrets / 'broker'}/", "/mosquitto/config/acl": str(ACL),
        "/mosquitto/data/": f"{tmp_path / 'data'}/",
    }, {8883: devices_port, 8884: ingest_port})
    return Broker(config, ingest_port, tmp_path / "mosquitto.log").start(), devices_port, ingest_port


def connects(port: int, ca: Path, *, cert: Path | None = None, user: str | None = None,
             password: str | None = None, read: str | None = None) -> bool:
    """Whether a client gets in (and, with `read`, receives a message on that topic within 5 s)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.tls_set(ca_certs=str(ca), certfile=str(cert) if cert else None,
                   keyfile=str(cert.with_suffix(".key")) if cert else None)
    if user is not None:
        client.username_pw_set(user, password)
    received: list[bytes] = []
    answered: list[bool] = []  # the CONNACK's verdict, or False for a connection dropped before it
    client.on_message = lambda c, userdata, message: received.append(message.payload)
    client.on_connect = lambda c, userdata, flags, reason, properties: answered.append(not reason.is_failure)
    client.on_disconnect = lambda c, userdata, flags, reason, properties: answered.append(False)
    try:
        client.connect("127.0.0.1", port, keepalive=10)
    except OSError:
        return False  # the TLS handshake failed: no certificate where one is required
    client.loop_start()
    try:
        if not wait_for_condition(lambda: bool(answered), 5) or not answered[0]:
            return False
        if read is not None:
            client.subscribe(read, qos=0)
            return wait_for_condition(lambda: bool(received), 5)
        return True
    finally:
        client.loop_stop()
        client.disconnect()


def wait_for_condition(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_compose_broker_lets_in_registered_devices_ingest_and_its_health_check_only(
        tmp_path, compose_secrets, cleanup):
    broker, devices_port, ingest_port = start_compose_broker(tmp_path, compose_secrets)
    cleanup.append(broker)
    ca = compose_secrets / "broker" / "ca.crt"
    assert connects(devices_port, ca, user=DEVICE, password=PASSWORDS[DEVICE])
    assert not connects(devices_port, ca, user=DEVICE, password="wrong")
    assert not connects(devices_port, ca)  # anonymous
    assert connects(ingest_port, compose_secrets / "ingest" / "ca.crt",
                    cert=compose_secrets / "ingest" / f"{INGEST}.crt")
    assert not connects(ingest_port, ca, user=DEVICE, password=PASSWORDS[DEVICE])  # no certificate
    # The compose health check: its certificate reads the broker's uptime.
    assert connects(ingest_port, ca, cert=compose_secrets / "broker" / "compose-healthcheck.crt",
                    read="$SYS/broker/uptime")
    # A second start of the step keeps the certificates the broker and ingest already use.
    before = (compose_secrets / "ingest" / f"{INGEST}.crt").read_bytes()
    uid = str(os.geteuid())
    again = subprocess.run(["sh", str(COMPOSE_SECRETS)], capture_output=True, text=True, check=True,
                           env={**os.environ, "SECRETS_ROOT": str(compose_secrets), "MOSQUITTO_UID": uid,
                                "CITYWATCH_UID": uid})
    assert "certificates in place" in again.stdout
    assert (compose_secrets / "ingest" / f"{INGEST}.crt").read_bytes() == before
    assert DEVICE in (compose_secrets / "broker" / "passwd").read_text()


def test_compose_broker_keeps_ingests_session_through_a_20_s_ingest_outage_at_100_msg_per_s(
        tmp_path, compose_secrets, cleanup, kafka_bootstrap):
    broker, devices_port, ingest_port = start_compose_broker(tmp_path, compose_secrets)
    cleanup.append(broker)
    kafka = own_topics(kafka_bootstrap)
    certs = compose_secrets / "ingest"
    # The real `citywatch ingest`, connecting as deploy/config/citywatch.yaml does: its listener, TLS,
    # its client certificate as its identity, no password.
    config = {
        "bus": {"kind": "kafka", "kafka": kafka.model_dump(mode="json")},
        "mqtt": {"url": f"mqtt://127.0.0.1:{ingest_port}", "client_id": INGEST,
                 "tls": {"enabled": True, "ca_file": str(certs / "ca.crt"),
                         "cert_file": str(certs / f"{INGEST}.crt"),
                         "key_file": str(certs / f"{INGEST}.key")}},
        "devices": bins(DEVICE),
    }
    ingest = RoleProcess(tmp_path, "ingest", config).start()
    device = Device(devices_port, compose_secrets / "broker" / "ca.crt", native=True)
    cleanup.append(device)
    try:
        device.publish(100)                      # 1 s with ingest up
        ingest.kill()                            # SIGKILL: its producer buffer and unacknowledged messages
        device.publish(20 * RATE_PER_S)          # 20 s of outage: 2,000 messages queued for the session
        ingest = RoleProcess(tmp_path, "ingest", config, name="ingest-2").start()
        device.publish(100)                      # 1 s after it is back
        wait_for(device.acknowledged, 20, 0.1, "the broker to acknowledge every message")

        on_kafka = numbers_on_kafka(kafka, expected=set(range(2200)), timeout_s=30)
        missing = set(range(2200)) - on_kafka
        assert not missing, f"{len(missing)} of 2200 acknowledged messages lost, first {sorted(missing)[:10]}"
    finally:
        if ingest.process is not None:
            assert ingest.stop() == 0, ingest.log()


def own_topics(bootstrap: str) -> KafkaSettings:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return KafkaSettings.model_validate({
        "bootstrap_servers": [bootstrap], "partitions": 2, "linger_ms": 1,
        "topics": {name: f"{prefix}.{name}" for name in
                   ("events", "dead_letters", "violations", "rule_outputs", "checkpoints", "devices")},
        "group_id": f"{prefix}-processors", "alerts_group_id": f"{prefix}-alerts",
    })


def numbers_on_kafka(settings: KafkaSettings, expected: set[int], timeout_s: float) -> set[int]:
    """The `n` attribute of every event on the events topic, read until all `expected` are there."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    decoder = msgspec.msgpack.Decoder(Event)
    seen: set[int] = set()
    try:
        partitions = [TopicPartition(settings.topics.events, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        while not expected <= seen and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                seen.update(int(decoder.decode(record.value).attributes["n"]) for record in batch)
        return seen
    finally:
        consumer.close()


def test_tls_broker_killed_twice_keeps_the_queued_messages_of_ingests_session(tmp_path, secrets, cleanup):
    port = free_port()
    config = shipped(TLS_CONFIG, tmp_path, {
        "/etc/mosquitto/certs/": f"{secrets}/", "/etc/mosquitto/passwd": str(secrets / "passwd"),
        "/etc/mosquitto/acl": str(ACL), "/var/lib/mosquitto/": f"{tmp_path / 'data'}/",
    }, {8883: port})
    broker = Broker(config, port, tmp_path / "mosquitto.log").start()
    cleanup.append(broker)
    ingest = Subscriber(port, tmp_path, secrets / "ca.crt", password=PASSWORDS[INGEST]).start()
    cleanup.append(ingest)
    ingest.kill()  # offline from here on: everything below is queued for its session
    device = Device(port, secrets / "ca.crt")
    cleanup.append(device)

    for _ in range(2):
        device.publish(3 * RATE_PER_S)
        wait_for(device.acknowledged, 15, 0.05, "the broker to acknowledge every message")
        time.sleep(0.3)  # the next event-loop pass has saved; docs/deploy.md has the window before it
        broker.kill()
        broker.start()

    ingest.start()
    missing = wait_until_all_received(ingest, device, 20)
    assert device.next_number == 600
    assert not missing, f"{len(missing)} of 600 acknowledged messages lost, first {sorted(missing)[:10]}"
