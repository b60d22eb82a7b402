"""No secret from any setting reaches a log line, an error body or `citywatch check-config` output.

Every secret-bearing setting gets a recognisable value; the components then fail for real against ports
where nothing listens (InfluxDB writes and queries, the MQTT broker), in this process (caplog) and as
`citywatch up`, `citywatch ingest` and `citywatch check-config` processes. The secrets must appear in no
output, while the failures themselves are reported (so the test sees the lines that used to leak).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from core.metrics import Metrics
from core.models import Event
from core.settings import InfluxDBSettings
from store.influx_store import InfluxQueryError, InfluxStore
from tests.support.process import REPO, CitywatchCommand, free_port
from tests.support.stores import KEEP_ALL
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

MQTT_URL_PASSWORD = "mqtt-url-pw-5c1e9"
MQTT_PASSWORD = "mqtt-field-pw-83d2a"
INFLUX_URL_PASSWORD = "influx-url-pw-0b7f4"
INFLUX_PASSWORD = "influx-field-pw-61aa0"
INFLUX_TOKEN = "influx-token-9e3c5"
SECRETS = (MQTT_URL_PASSWORD, MQTT_PASSWORD, INFLUX_URL_PASSWORD, INFLUX_PASSWORD, INFLUX_TOKEN)


def assert_no_secret(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{leaked} in:\n{text}"


def events(count: int) -> list[Event]:
    return [Event(event_id=f"e{n}", device_id="bin-1", kind="bin", event_time_ms=1_795_000_000_000 + n,
                  ingest_time_ms=1_795_000_000_000 + n, attributes={"fill_pct": n}) for n in range(count)]


@pytest.mark.parametrize("credentials", [
    {"api": "auto", "url_userinfo": f"citywatch:{INFLUX_URL_PASSWORD}@"},
    {"api": "v1", "username": "citywatch", "password": INFLUX_PASSWORD},
    {"api": "v2", "token": INFLUX_TOKEN},
], ids=["v1 url credentials", "v1 password", "v2 token"])
def test_influxdb_failures_log_and_report_no_secret(credentials: dict[str, str], tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there: every request is refused
    userinfo = credentials.pop("url_userinfo", "")
    settings = InfluxDBSettings.model_validate({
        "url": f"http://{userinfo}127.0.0.1:{port}", "flush_interval_ms": 20, "retry_min_s": 0.05,
        "retry_max_s": 0.2, "timeout_s": 1, **credentials})
    caplog.set_level(logging.DEBUG)
    store = InfluxStore(settings, tmp_path, KEEP_ALL, metrics=Metrics())
    store.start()
    try:
        store.write_events(events(10))
        store.flush()
        wait_for(lambda: store._writer.last_error is not None, 10, message="a failed write")
        with pytest.raises(InfluxQueryError) as ping:
            store.ping()
        with pytest.raises(InfluxQueryError) as query:
            store.query("SHOW DATABASES")
    finally:
        store.close()
    assert "InfluxDB write failed, retrying with backoff" in caplog.text
    assert f"127.0.0.1:{port}" in str(query.value)
    for text in (caplog.text, str(ping.value), str(query.value), store._writer.last_error or ""):
        assert_no_secret(text)


def _config(tmp_path: Path, api_port: int, mqtt: dict[str, Any], influxdb: dict[str, Any]) -> dict[str, Any]:
    return {
        "mqtt": {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, **mqtt},
        "store": {"kind": "influxdb", "data_dir": str(tmp_path / "data"),
                  "influxdb": {"timeout_s": 1, "retry_min_s": 0.05, **influxdb}},
        "api": {"auth": "disabled", "host": "127.0.0.1", "port": api_port},
        # Publishes to the ingest broker with its credentials: its start is logged with the URL.
        "alerts": {"mqtt": {"enabled": True}},
    }


class Up(CitywatchCommand):
    def arguments(self) -> list[str]:
        return ["--log-level", "DEBUG", "up", "--config", str(self.config_path)]


def secret_file(tmp_path: Path, name: str, content: str) -> str:
    """A secret as compose and Kubernetes mount it: one file, the value and a line break."""
    path = tmp_path / "run-secrets" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(content + "\n")
    return str(path)


@pytest.mark.parametrize("secrets_in", ["urls", "fields", "environment"])
def test_citywatch_up_against_stopped_services_logs_and_answers_no_secret(secrets_in: str,
                                                                            tmp_path: Path) -> None:
    mqtt_port, influx_port, api_port = free_port(), free_port(), free_port()
    environment = {}
    if secrets_in == "urls":
        mqtt = {"url": f"mqtt://citywatch-ingest:{MQTT_URL_PASSWORD}@127.0.0.1:{mqtt_port}"}
        influxdb = {"url": f"http://citywatch:{INFLUX_URL_PASSWORD}@127.0.0.1:{influx_port}"}
    elif secrets_in == "fields":
        mqtt = {"url": f"mqtt://127.0.0.1:{mqtt_port}", "username": "citywatch-ingest",
                "password": MQTT_PASSWORD}
        influxdb = {"url": f"http://127.0.0.1:{influx_port}", "token": INFLUX_TOKEN}
    else:
        mqtt, influxdb = {"url": f"mqtt://127.0.0.1:{mqtt_port}"}, {"url": "http://127.0.0.1:1"}
        environment = {
            "CITYWATCH_MQTT__USERNAME": "citywatch-ingest",
            "CITYWATCH_MQTT__PASSWORD_FILE": secret_file(tmp_path, "mqtt_password", MQTT_PASSWORD),
            "CITYWATCH_STORE__INFLUXDB__URL": f"http://citywatch:{INFLUX_URL_PASSWORD}@127.0.0.1:{influx_port}",
        }
    up = Up(tmp_path, "up", _config(tmp_path, api_port, mqtt, influxdb), api_port, environment)
    up.start(wait_ready=False)
    try:
        wait_for(lambda: "retention sweep failed" in up.log() and f"127.0.0.1:{mqtt_port} unreachable"
                 in up.log(), 30, 0.1, f"the failures to be logged (log: {up.log_path})")
        readiness = httpx.get(f"{up.base_url}/readyz", timeout=10)
        status = httpx.get(f"{up.base_url}/v1/status", timeout=10)
    finally:
        code = up.stop()
    assert readiness.status_code == 503
    store = next(c for c in readiness.json()["components"] if c["name"] == "store")
    assert f"InfluxDB at http://127.0.0.1:{influx_port} unreachable" in store["detail"]
    assert code == 0
    for text in (up.log(), readiness.text, status.text):
        assert_no_secret(text)


def run_citywatch(*arguments: str, environment: dict[str, str] | None = None
                  ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "citywatch.cli", *arguments], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False, env={**os.environ, **(environment or {})})


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "city.yaml"
    path.write_text(text)
    return path


EVERY_SECRET = {
    "mqtt": {"url": "mqtt://broker:1883", "username": "ingest", "password": MQTT_PASSWORD},
    "store": {"kind": "influxdb", "influxdb": {"url": f"http://cw:{INFLUX_URL_PASSWORD}@influx:8086",
                                               "token": INFLUX_TOKEN}},
}


@pytest.mark.parametrize(("name", "config", "expected"), [
    ("valid", yaml.safe_dump(EVERY_SECRET), "valid (0 devices"),
    ("unknown key beside the secrets", yaml.safe_dump({**EVERY_SECRET, "mqtt": {
        **EVERY_SECRET["mqtt"], "pasword": MQTT_URL_PASSWORD}}),
     "mqtt.pasword: unknown key (did you mean 'password'?)"),
    ("not an mqtt url", yaml.safe_dump({"mqtt": {"url": f"ftp://ingest:{MQTT_URL_PASSWORD}@broker"}}),
     "mqtt.url: expected mqtt://host:port, got 'ftp://broker'"),
    ("a port that is a password", yaml.safe_dump({"mqtt": {"url": f"mqtt://broker:{MQTT_URL_PASSWORD}"}}),
     "mqtt.url: expected mqtt://host:port"),
    ("credentials given twice", yaml.safe_dump({"mqtt": {
        "url": f"mqtt://ingest:{MQTT_URL_PASSWORD}@broker:1883", "password": MQTT_PASSWORD}}),
     "mqtt.url holds a user name and password, and so do mqtt.username and mqtt.password"),
    ("credentials in the output url", yaml.safe_dump({"alerts": {"mqtt": {
        "url": f"mqtt://out:{MQTT_URL_PASSWORD}@broker:1883"}}}),
     "alerts.mqtt.url: must not hold a user name or password"),
    ("broken YAML on the password's line", f'mqtt:\n  password: "{MQTT_PASSWORD}\n  qos: 1\n',
     "is not valid YAML: found unexpected end of stream at line 4, column 1"),
], ids=lambda value: value if isinstance(value, str) and len(value) < 40 else "")
def test_check_config_prints_no_secret(name: str, config: str, expected: str, tmp_path: Path) -> None:
    result = run_citywatch("check-config", str(_write(tmp_path, config)))
    output = result.stdout + result.stderr
    assert expected in output
    assert result.returncode == (0 if name == "valid" else 2), output
    assert_no_secret(output)


def test_a_command_line_url_with_a_password_is_not_echoed_when_invalid(tmp_path: Path) -> None:
    config = _write(tmp_path, yaml.safe_dump({"bus": {"kind": "kafka"}}))
    result = run_citywatch("ingest", "--config", str(config), "--mqtt-url",
                           f"ftp://ingest:{MQTT_URL_PASSWORD}@broker:1883")
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "invalid configuration in the command-line options" in output and "mqtt.url" in output
    assert_no_secret(output)



@dataclass(frozen=True)
class SecretFile:
    """A variable's value that the test writes to a file under {secrets}; the variable names the file."""

    name: str
    content: str


VALID_ENVIRONMENT = {
    "CITYWATCH_MQTT__URL": "mqtt://broker:1883", "CITYWATCH_MQTT__USERNAME": "ingest",
    "CITYWATCH_MQTT__PASSWORD_FILE": SecretFile("mqtt_password", MQTT_PASSWORD),
    "CITYWATCH_STORE__KIND": "influxdb",
    "CITYWATCH_STORE__INFLUXDB__URL": f"http://cw:{INFLUX_URL_PASSWORD}@influx:8086",
    "CITYWATCH_STORE__INFLUXDB__TOKEN_FILE": SecretFile("influx_token", INFLUX_TOKEN),
    # Not a secret key, but kept in a file: check-config does not show the file's content either.
    "CITYWATCH_MQTT__CLIENT_ID_FILE": SecretFile("client_id", MQTT_URL_PASSWORD),
}


@pytest.mark.parametrize(("name", "file", "environment", "expected"), [
    ("valid", {}, VALID_ENVIRONMENT,
     '  mqtt.client_id = "**********"  <- file {secrets}/client_id (CITYWATCH_MQTT__CLIENT_ID_FILE)\n'
     '  mqtt.password = "**********"  <- file {secrets}/mqtt_password (CITYWATCH_MQTT__PASSWORD_FILE)\n'
     '  mqtt.url = "mqtt://broker:1883"  <- CITYWATCH_MQTT__URL\n'),
    ("valid, secrets in variables", {}, {"CITYWATCH_MQTT__PASSWORD": MQTT_PASSWORD,
                                         "CITYWATCH_STORE__INFLUXDB__PASSWORD": INFLUX_PASSWORD},
     '  store.influxdb.password = "**********"  <- CITYWATCH_STORE__INFLUXDB__PASSWORD\n'),
    ("unknown variable beside the secrets", {},
     {**VALID_ENVIRONMENT, "CITYWATCH_MQTT__PASWORD": MQTT_URL_PASSWORD},
     "CITYWATCH_MQTT__PASWORD names no configuration key (did you mean CITYWATCH_MQTT__PASSWORD?)"),
    ("a secret as variable and as file", {}, {**VALID_ENVIRONMENT, "CITYWATCH_MQTT__PASSWORD": MQTT_PASSWORD},
     "CITYWATCH_MQTT__PASSWORD and CITYWATCH_MQTT__PASSWORD_FILE both set mqtt.password"),
    ("not an mqtt url", {}, {"CITYWATCH_MQTT__URL": f"ftp://ingest:{MQTT_URL_PASSWORD}@broker"},
     "mqtt.url (set by CITYWATCH_MQTT__URL): expected mqtt://host:port, got 'ftp://broker'"),
    ("a secret file where a number belongs", {},
     {"CITYWATCH_API__PORT_FILE": SecretFile("port", INFLUX_PASSWORD)},
     "api.port (set by CITYWATCH_API__PORT_FILE): "),
    ("a secret file where JSON belongs", {},
     {"CITYWATCH_INGEST__ROUTES_FILE": SecretFile("routes", INFLUX_TOKEN)},
     "CITYWATCH_INGEST__ROUTES_FILE: not valid JSON"),
    ("credentials in the file's url and in a secret file",
     {"mqtt": {"url": f"mqtt://ingest:{MQTT_URL_PASSWORD}@broker:1883"}},
     {"CITYWATCH_MQTT__PASSWORD_FILE": SecretFile("mqtt_password", MQTT_PASSWORD)},
     "mqtt (set by CITYWATCH_MQTT__PASSWORD_FILE): mqtt.url holds a user name and password"),
], ids=lambda value: value if isinstance(value, str) and len(value) < 60 else "")
def test_check_config_prints_no_secret_from_variables_or_files(
        name: str, file: dict[str, Any], environment: dict[str, str | SecretFile], expected: str,
        tmp_path: Path) -> None:
    secrets = tmp_path / "run-secrets"
    variables = {variable: secret_file(tmp_path, value.name, value.content) if isinstance(value, SecretFile)
                 else value for variable, value in environment.items()}
    config = _write(tmp_path, yaml.safe_dump(file))
    # The file named by CITYWATCH_CONFIG, as a container's environment would give it.
    result = run_citywatch("check-config", environment={"CITYWATCH_CONFIG": str(config), **variables})
    output = result.stdout + result.stderr
    assert expected.format(secrets=secrets) in output
    if name.startswith("valid"):
        assert result.returncode == 0, output
        assert result.stdout.startswith(f"{config}: valid (0 devices")
        assert "set by the environment, over the file:\n" in result.stdout
    else:
        assert result.returncode == 2, output
    assert_no_secret(output)
