"""deploy/compose.yaml is wired to what the code reads: no container engine runs here, so the file is
parsed and every host, port, path and command checked against the settings the roles load.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from citywatch.cli import build_parser
from citywatch.settings import BusKind, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
ROLES = ("ingest", "process", "api")
CONFIG_IN_CONTAINER = "/etc/citywatch/citywatch.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def mounts(service: dict[str, Any]) -> dict[str, Path | str]:
    """Container path -> host path (resolved against deploy/) or named volume."""
    result: dict[str, Path | str] = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        result[target] = (DEPLOY / source).resolve() if source.startswith(".") else source
    return result


@pytest.fixture(scope="module")
def role_settings(compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Settings]:
    """Each role's settings, loaded from the files its container sees at the paths it sees them."""
    loaded = {}
    for role in ROLES:
        root = tmp_path_factory.mktemp(role)
        for target, source in mounts(compose["services"][role]).items():
            if isinstance(source, Path):
                assert source.exists(), f"{role} mounts {source}, which is not in the repository"
                destination = root / target.lstrip("/")
                destination.parent.mkdir(parents=True, exist_ok=True)
                if source.is_dir():
                    shutil.copytree(source, destination)
                else:
                    shutil.copy(source, destination)
        loaded[role] = load_settings(root / CONFIG_IN_CONTAINER.lstrip("/"))
    return loaded


def test_the_city_set_up_has_its_services_each_with_a_health_check(compose):
    services = compose["services"]
    assert set(services) == {"mosquitto", "kafka", "influxdb", *ROLES}
    for name, service in services.items():
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


def test_ingest_subscribes_to_the_mosquitto_service_on_its_listener_port(compose, role_settings):
    url = urlparse(role_settings["ingest"].mqtt.url)
    assert url.hostname == "mosquitto"
    listener = re.search(r"^listener\s+(\d+)", (DEPLOY / "config" / "mosquitto.conf").read_text(), re.M)
    assert listener is not None and int(listener.group(1)) == url.port
    assert compose["services"]["ingest"]["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    assert f"{url.port}:{url.port}" in compose["services"]["mosquitto"]["ports"]


def test_processors_are_replicated_within_the_partitions_and_share_the_store_with_the_api(
        compose, role_settings):
    process = compose["services"]["process"]
    replicas = process["deploy"]["replicas"]
    assert 2 <= replicas <= role_settings["process"].bus.kafka.partitions
    data_dir = str(role_settings["process"].store.data_dir)
    assert role_settings["api"].store.data_dir == role_settings["process"].store.data_dir
    for role in ("process", "api"):
        assert mounts(compose["services"][role]).get(data_dir) == "citywatch-data"
    assert "citywatch-data" in compose["volumes"]


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


def test_influxdb_is_there_with_its_database(compose):
    influxdb = compose["services"]["influxdb"]
    assert influxdb["environment"]["INFLUXDB_DB"] == "citywatch"
    assert "8086:8086" in influxdb["ports"]


def test_the_image_holds_every_package_and_runs_the_citywatch_command():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for top_level in {package.split(".")[0] for package in packages}:
        assert re.search(rf"^COPY {top_level} \./{top_level}$", dockerfile, re.M), f"{top_level} not copied"
    assert 'ENTRYPOINT ["citywatch"]' in dockerfile
    assert re.search(r"^EXPOSE .*\b8000\b.*\b9108\b", dockerfile, re.M)
