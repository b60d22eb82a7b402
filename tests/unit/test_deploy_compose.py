"""deploy/compose.yaml is wired to what the code reads: no container engine runs here, so the file is
validated against the Compose Specification's JSON schema, parsed, and every host, port, path, volume
and command checked against the settings the roles load. The broker side runs for real in
tests/integration/test_broker_configs.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from citywatch.cli import build_parser
from core.settings import BusKind, PostgresSettings, RelationalKind, Settings, StoreKind, load_settings
from tests.support.postgres import PASSWORD

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_SCHEMA = REPO / "tests" / "data" / "compose-spec" / "compose-spec.json"
ROLES = ("ingest", "process", "api")
ONE_SHOTS = ("mqtt-secrets", "postgres-secret", "first-admin-key")
CONFIG_IN_CONTAINER = "/etc/citywatch/citywatch.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def mounts(service: dict[str, Any]) -> dict[str, Path | str | None]:
    """Container path -> host path (resolved against deploy/), named volume, or None (anonymous)."""
    result: dict[str, Path | str | None] = {}
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        if len(parts) == 1:
            result[parts[0]] = None
            continue
        source, target = parts[:2]
        result[target] = (DEPLOY / source).resolve() if source.startswith(".") else source
    return result


def copy_mounted_files(service: dict[str, Any], root: Path) -> None:
    """The service's bind mounts from the repository, at their container paths under `root`."""
    for target, source in mounts(service).items():
        if isinstance(source, Path):
            assert source.exists(), f"{source} is mounted but not in the repository"
            destination = root / target.lstrip("/")
            destination.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, destination)
            else:
                shutil.copy(source, destination)


@pytest.fixture(scope="module")
def role_settings(compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Settings]:
    """Each role's settings, loaded from the files its container sees at the paths it sees them."""
    loaded = {}
    for role in ROLES:
        root = tmp_path_factory.mktemp(role)
        copy_mounted_files(compose["services"][role], root)
        loaded[role] = load_settings(root / CONFIG_IN_CONTAINER.lstrip("/"))
    return loaded


def mosquitto_listeners() -> dict[int, dict[str, str]]:
    """Listener port -> its settings, from the compose broker's configuration (per_listener_settings)."""
    listeners: dict[int, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in (DEPLOY / "config" / "mosquitto.conf").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key == "listener":
            port, bind = value.split()
            current = listeners.setdefault(int(port), {"bind": bind})
        elif current is not None and key in ("allow_anonymous", "password_file", "acl_file", "cafile",
                                             "certfile", "keyfile", "require_certificate",
                                             "use_identity_as_username"):
            current[key] = value
    return listeners


def test_the_file_follows_the_compose_specification(compose):
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    errors = [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
              for error in jsonschema.Draft7Validator(schema).iter_errors(compose)]
    assert not errors


def test_the_city_set_up_has_its_services_and_each_long_running_one_a_health_check(compose):
    services = compose["services"]
    assert set(services) == {"mosquitto", "kafka", "influxdb", "postgres", *ROLES, *ONE_SHOTS}
    for name, service in services.items():
        if name in ONE_SHOTS:
            assert service["restart"] == "no", f"{name} runs once per start"
        else:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert "zookeeper" not in services


def test_roles_run_the_citywatch_commands_with_the_mounted_config(compose):
    for role in ROLES:
        command = compose["services"][role]["command"]
        assert command[0] == role
        args = build_parser().parse_args(command)  # the real CLI accepts it
        assert str(args.config) == CONFIG_IN_CONTAINER
        assert CONFIG_IN_CONTAINER in mounts(compose["services"][role])


def test_every_role_is_pointed_at_kafka_and_the_same_topics(role_settings):
    for settings in role_settings.values():
        assert settings.bus.kind == BusKind.KAFKA
    assert len({settings.bus.kafka.model_dump_json() for settings in role_settings.values()}) == 1
    assert role_settings["process"].devices, "the device registry file is mounted beside the config"
    assert role_settings["ingest"].vendor_maps, "the vendor maps file is mounted beside the config"


def test_kafka_runs_in_kraft_mode_where_the_roles_look_for_it(compose, role_settings):
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    advertised = {urlparse(url).netloc for url in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for settings in role_settings.values():
        for server in settings.bus.kafka.bootstrap_servers:
            assert server in advertised
    # One broker: topics and the group's internal topics cannot ask for more replicas than that.
    assert role_settings["process"].bus.kafka.replication_factor == 1
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    for role in ROLES:
        assert compose["services"][role]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_no_named_volume_is_mounted_by_two_roles(compose):
    users = Counter(source for role in ROLES for source in set(mounts(compose["services"][role]).values())
                    if isinstance(source, str))
    shared = sorted(volume for volume, count in users.items() if count > 1)
    assert not shared, f"volumes mounted by more than one role: {shared}"


def test_each_role_keeps_its_own_files_and_the_shared_data_is_in_influxdb(compose, role_settings):
    services = compose["services"]
    for role in ("process", "api"):
        store = role_settings[role].store
        assert store.kind == StoreKind.INFLUXDB
        assert urlparse(store.influxdb.url).hostname == "influxdb"
        assert services[role]["depends_on"]["influxdb"]["condition"] == "service_healthy"
        assert store.influxdb.database == services["influxdb"]["environment"]["INFLUXDB_DB"]
    # Each process replica its own spool (anonymous volume); the api keeps no files: its keys, webhooks
    # and devices are in PostgreSQL, with the password from the secret file the compose step makes.
    assert mounts(services["process"])[str(role_settings["process"].store.data_dir)] is None
    assert str(role_settings["api"].store.data_dir) not in mounts(services["api"])
    relational = role_settings["api"].relational
    assert relational.kind == RelationalKind.POSTGRESQL and relational.postgresql.host == "postgres"
    postgres = services["postgres"]["environment"]
    assert (relational.postgresql.user, relational.postgresql.database) == (
        postgres["POSTGRES_USER"], postgres["POSTGRES_DB"])
    for service in ("api", "first-admin-key"):
        password_file = services[service]["environment"]["CITYWATCH_RELATIONAL__POSTGRESQL__PASSWORD_FILE"]
        assert password_file == postgres["POSTGRES_PASSWORD_FILE"]
        assert mounts(services[service])[str(Path(password_file).parent)] == "postgres-secret"
        assert services[service]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # Ingest writes no files: it mounts only its configuration and its MQTT client certificate.
    assert {source for source in mounts(services["ingest"]).values() if isinstance(source, str)} == {
        "mqtt-ingest-secrets"}


def test_processors_are_replicated_within_the_partitions(compose, role_settings):
    replicas = compose["services"]["process"]["deploy"]["replicas"]
    assert 2 <= replicas <= role_settings["process"].bus.kafka.partitions


def test_no_listener_of_the_broker_lets_anonymous_clients_in():
    text = (DEPLOY / "config" / "mosquitto.conf").read_text()
    assert re.search(r"^per_listener_settings true$", text, re.M)
    listeners = mosquitto_listeners()
    assert listeners
    for port, listener in listeners.items():
        assert listener["allow_anonymous"] == "false", f"listener {port} lets anonymous clients in"
        assert listener["acl_file"] == "/mosquitto/config/acl"
        assert listener["certfile"], f"listener {port} is not TLS"


def test_devices_connect_with_passwords_on_the_published_listener(compose):
    listeners = mosquitto_listeners()
    mosquitto = compose["services"]["mosquitto"]
    published = {int(port.split(":")[-1]) for port in mosquitto["ports"]}
    assert published == {8883}
    assert listeners[8883]["password_file"] == "/mosquitto/secrets/passwd"
    assert mounts(mosquitto)["/mosquitto/secrets"] == "mqtt-broker-secrets"
    assert mounts(mosquitto)["/mosquitto/config/acl"] == (DEPLOY / "mosquitto" / "acl.example").resolve()


def test_ingest_authenticates_with_its_certificate_on_the_unpublished_listener(compose, role_settings):
    mqtt = role_settings["ingest"].mqtt
    assert mqtt.url is not None
    url = urlparse(mqtt.url)
    assert url.hostname == "mosquitto"
    listener = mosquitto_listeners()[url.port or 0]
    assert listener["require_certificate"] == "true" and listener["use_identity_as_username"] == "true"
    assert mqtt.tls.enabled and mqtt.password is None
    ingest_mounts = mounts(compose["services"]["ingest"])
    for path in (mqtt.tls.ca_file, mqtt.tls.cert_file, mqtt.tls.key_file):
        assert path is not None and ingest_mounts[str(path.parent)] == "mqtt-ingest-secrets"
    # The certificate's common name is the user the ACL lets read the device topics.
    assert mqtt.tls.cert_file is not None and mqtt.tls.cert_file.stem == mqtt.client_id
    acl = (DEPLOY / "mosquitto" / "acl.example").read_text()
    assert re.search(rf"^user {mqtt.client_id}\ntopic read citywatch/events/#$", acl, re.M)
    assert compose["services"]["ingest"]["depends_on"]["mosquitto"]["condition"] == "service_healthy"


def test_the_secrets_step_fills_the_volumes_the_broker_and_ingest_mount(compose):
    services = compose["services"]
    step = services["mqtt-secrets"]
    step_mounts = mounts(step)
    root = step["environment"]["SECRETS_ROOT"]
    assert step_mounts[f"{root}/broker"] == mounts(services["mosquitto"])["/mosquitto/secrets"]
    assert step_mounts[f"{root}/ingest"] == "mqtt-ingest-secrets"
    assert step["user"] == "0:0"  # it hands each volume to the user of its service
    script = step["entrypoint"][-1]
    assert step_mounts[script] == (DEPLOY / "scripts" / "compose-mqtt-secrets.sh").resolve()
    assert step_mounts[str(Path(script).parent / "gen-test-certs.sh")] == (
        DEPLOY / "mosquitto" / "gen-test-certs.sh").resolve()
    after_step = services["mosquitto"]["depends_on"]["mqtt-secrets"]["condition"]
    assert after_step == "service_completed_successfully"
    # The broker's health check reads $SYS with a certificate the step makes and the ACL allows.
    check = services["mosquitto"]["healthcheck"]["test"]
    assert check[check.index("-p") + 1] == "8884"
    assert check[check.index("--cert") + 1] == "/mosquitto/secrets/compose-healthcheck.crt"
    acl = (DEPLOY / "mosquitto" / "acl.example").read_text()
    assert re.search(r"^user compose-healthcheck\ntopic read \$SYS/broker/uptime$", acl, re.M)


def test_health_checks_and_ports_match_what_the_roles_listen_on(compose, role_settings):
    api = role_settings["api"].api
    assert api.host == "0.0.0.0"
    assert f"{api.port}:{api.port}" in compose["services"]["api"]["ports"]
    assert f"127.0.0.1:{api.port}/readyz" in " ".join(compose["services"]["api"]["healthcheck"]["test"])
    for role in ("ingest", "process"):
        roles = role_settings[role].roles
        assert roles.status_host == "0.0.0.0"
        check = " ".join(compose["services"][role]["healthcheck"]["test"])
        assert f"127.0.0.1:{roles.status_port}/readyz" in check


def test_the_geo_files_the_roles_tag_with_are_mounted(role_settings):
    from ingest.geo import GeoTagger

    for role in ("ingest", "process"):
        GeoTagger.from_settings(role_settings[role].geo)  # raises if a file is missing or invalid


def test_the_image_holds_every_package_and_runs_the_citywatch_command():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for top_level in {package.split(".")[0] for package in packages}:
        assert re.search(rf"^COPY {top_level} \./{top_level}$", dockerfile, re.M), f"{top_level} not copied"
    assert 'ENTRYPOINT ["citywatch"]' in dockerfile
    assert re.search(r"^EXPOSE .*\b8000\b.*\b9108\b", dockerfile, re.M)


def test_the_data_volumes_start_owned_by_the_user_the_roles_run_as(role_settings):
    # A new volume starts as a copy of the image's directory: the roles can write to it only because the
    # image makes store.data_dir the citywatch user's home.
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    home = re.search(r"useradd .*--home-dir (\S+) --create-home citywatch", dockerfile)
    assert home is not None and re.search(r"^USER citywatch$", dockerfile, re.M)
    for role in ("process", "api"):
        assert str(role_settings[role].store.data_dir) == home.group(1)


# The first admin key: the one-shot step's script run for real, with the real `citywatch keys`.

@pytest.fixture
def first_admin_key(compose, tmp_path, postgres: PostgresSettings) -> tuple[Path, dict[str, str], Path]:
    """(script, environment, data dir): the step's mounts under tmp_path, `citywatch` on PATH, and the
    configuration's PostgreSQL pointed at a real server (an empty database of its own)."""
    step = compose["services"]["first-admin-key"]
    root = tmp_path / "container"
    copy_mounted_files(step, root)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "citywatch"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m citywatch.cli "$@"\n')
    shim.chmod(0o755)
    data_dir = tmp_path / "first-admin-key"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO),
           "CITYWATCH_CONFIG": str(root / CONFIG_IN_CONTAINER.lstrip("/")),
           "CITYWATCH_DATA_DIR": str(data_dir),
           "CITYWATCH_RELATIONAL__POSTGRESQL__HOST": postgres.host,
           "CITYWATCH_RELATIONAL__POSTGRESQL__PORT": str(postgres.port),
           "CITYWATCH_RELATIONAL__POSTGRESQL__DATABASE": postgres.database,
           "CITYWATCH_RELATIONAL__POSTGRESQL__USER": postgres.user,
           "CITYWATCH_RELATIONAL__POSTGRESQL__PASSWORD": PASSWORD}
    return root / step["entrypoint"][-1].lstrip("/"), env, data_dir


def test_the_first_admin_key_step_writes_to_the_api_store_before_the_api_starts(compose, role_settings):
    services = compose["services"]
    step = services["first-admin-key"]
    data_dir = str(role_settings["api"].store.data_dir)
    # The key goes to PostgreSQL (the same configuration as the api); only the token file to its own volume.
    assert mounts(step)[data_dir] == "first-admin-key"
    assert mounts(step)[CONFIG_IN_CONTAINER] == mounts(services["api"])[CONFIG_IN_CONTAINER]
    script = (DEPLOY / "scripts" / "compose-first-admin-key.sh").read_text()
    assert f"CITYWATCH_DATA_DIR:-{data_dir}}}" in script
    assert services["api"]["depends_on"]["first-admin-key"]["condition"] == "service_completed_successfully"


def keys_listed(env: dict[str, str], data_dir: Path) -> str:
    """`citywatch keys list` as the step's environment sees the key store."""
    command = ["citywatch", "keys", "--config", env["CITYWATCH_CONFIG"], "--data-dir", str(data_dir), "list"]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout


def test_the_first_admin_key_step_creates_one_admin_key_and_says_where_its_token_is(first_admin_key):
    script, env, data_dir = first_admin_key
    first = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    token_file = data_dir / "first-admin-key.txt"
    assert str(token_file) in first.stdout
    assert "--entrypoint cat first-admin-key" in first.stdout
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = re.search(r"^token \(shown once, only its hash is stored\): (\S+)$", token_file.read_text(), re.M)
    assert token is not None
    assert list(data_dir.glob("*.sqlite*")) == []  # the key is in PostgreSQL, not beside the token
    listed = keys_listed(env, data_dir)
    assert "first-admin" in listed and "admin" in listed

    again = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, check=True)
    assert "already has keys" in again.stdout
    assert keys_listed(env, data_dir) == listed  # still the one key


def test_the_postgres_secret_step_makes_one_password_and_keeps_it(compose, tmp_path):
    step = compose["services"]["postgres-secret"]
    secret_dir = next(target for target, source in mounts(step).items() if source == "postgres-secret")
    postgres = compose["services"]["postgres"]["environment"]
    assert secret_dir == str(Path(postgres["POSTGRES_PASSWORD_FILE"]).parent)
    script = DEPLOY / "scripts" / "compose-postgres-secret.sh"
    env = {**os.environ, "SECRETS_DIR": str(tmp_path), "CITYWATCH_UID": str(os.getuid())}
    subprocess.run(["sh", str(script)], env=env, check=True, capture_output=True)
    password_file = tmp_path / "postgres-password"
    password = password_file.read_text().strip()
    assert len(password) >= 32 and stat.S_IMODE(password_file.stat().st_mode) == 0o400
    again = subprocess.run(["sh", str(script)], env=env, check=True, capture_output=True, text=True)
    assert "in place" in again.stdout and password_file.read_text().strip() == password
