"""Configuration from the environment: CITYWATCH_<SECTION>__<KEY> variables and <VAR>_FILE secret files over
the YAML file, over the defaults; a variable that names no key stops the start as an unknown key does.

The environment is passed to `load_settings` as a mapping (or set with monkeypatch), so no variable
outlives its test.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from citywatch.cli import _load, build_parser
from core.settings import ConfigError, Settings, environment_values, load_settings
from core.settings_env import NOT_CONFIGURATION, config_keys, describe

SECRET = "env-secret-4f1d9"


def config(tmp_path: Path, data: dict | None = None) -> Path:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(data or {}))
    return path


def secret_file(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / "secrets" / name
    path.parent.mkdir(exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def test_nested_keys_are_set_by_double_underscore_variables(tmp_path: Path) -> None:
    settings = load_settings(config(tmp_path), {
        "CITYWATCH_MQTT__URL": "mqtt://broker.city:1883",
        "CITYWATCH_STORE__INFLUXDB__URL": "http://influx.city:8086",
        "CITYWATCH_MQTT__TLS__ENABLED": "true",
        "CITYWATCH_MQTT__QOS": "0",
        "CITYWATCH_API__PORT": "8100",
        "CITYWATCH_STORE__INFLUXDB__BACKPRESSURE_TIMEOUT_S": "2.5",
    })
    assert settings.mqtt.url == "mqtt://broker.city:1883"
    assert settings.store.influxdb.url == "http://influx.city:8086"
    assert settings.mqtt.tls.enabled is True
    assert settings.mqtt.qos == 0
    assert settings.api.port == 8100
    assert settings.store.influxdb.backpressure_timeout_s == 2.5


@pytest.mark.parametrize("value", ["kafka-0:9092,kafka-1:9092", " kafka-0:9092 , kafka-1:9092 ",
                                   '["kafka-0:9092", "kafka-1:9092"]'], ids=["commas", "spaces", "json"])
def test_a_list_of_plain_values_is_a_comma_list_or_json(value: str, tmp_path: Path) -> None:
    settings = load_settings(config(tmp_path), {"CITYWATCH_BUS__KAFKA__BOOTSTRAP_SERVERS": value})
    assert settings.bus.kafka.bootstrap_servers == ["kafka-0:9092", "kafka-1:9092"]


def test_lists_of_networks_and_of_sections_and_mappings_are_json(tmp_path: Path) -> None:
    settings = load_settings(config(tmp_path), {
        "CITYWATCH_ALERTS__WEBHOOKS__ALLOWED_PRIVATE_NETWORKS": "10.20.0.0/16,192.168.1.0/24",
        "CITYWATCH_DEVICES": '[{"device_id": "bin-7", "kind": "bin", "tags": {"grid": "FT-11"}}]',
        "CITYWATCH_INGEST__ROUTES": '[{"pattern": "frigate/events", "codec": "frigate"}]',
        "CITYWATCH_RULES__ZONE_THRESHOLDS": '{"centre": {"bin_overflow": {"open_pct": 80}}}',
    })
    assert settings.alerts.webhooks.allowed_private_networks == (
        ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("192.168.1.0/24"))
    assert [(d.device_id, d.tags) for d in settings.devices] == [("bin-7", {"grid": "FT-11"})]
    assert [(r.pattern, r.codec) for r in settings.ingest.routes] == [("frigate/events", "frigate")]
    assert settings.rules.zone_thresholds == {"centre": {"bin_overflow": {"open_pct": 80.0}}}


def test_the_environment_wins_over_the_file_which_wins_over_the_defaults(tmp_path: Path) -> None:
    path = config(tmp_path, {"api": {"port": 8100, "max_page_size": 50}})
    defaults = load_settings(config(tmp_path / "empty"), {})
    from_file = load_settings(path, {})
    from_both = load_settings(path, {"CITYWATCH_API__PORT": "8200"})
    assert (defaults.api.port, from_file.api.port, from_both.api.port) == (8000, 8100, 8200)
    # Keys the environment does not set keep the file's value, or the default.
    assert (from_both.api.max_page_size, from_both.api.host) == (50, "127.0.0.1")


def test_command_line_options_win_over_the_environment(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYWATCH_API__PORT", "8200")
    monkeypatch.setenv("CITYWATCH_API__MAX_PAGE_SIZE", "20")
    args = build_parser().parse_args(["up", "--config", str(config(tmp_path)), "--port", "8300"])
    settings = _load(args)
    assert (settings.api.port, settings.api.max_page_size) == (8300, 20)


def test_an_empty_variable_unsets_an_optional_key(tmp_path: Path) -> None:
    path = config(tmp_path, {"mqtt": {"url": "mqtt://broker:1883"}})
    assert load_settings(path, {"CITYWATCH_MQTT__URL": ""}).mqtt.url is None


def test_variables_are_applied_by_default_from_the_process_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYWATCH_MQTT__CLIENT_ID", "ingest-east")
    assert load_settings(config(tmp_path)).mqtt.client_id == "ingest-east"


def test_citywatch_config_names_the_file_when_no_path_is_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYWATCH_CONFIG", str(config(tmp_path, {"api": {"port": 8300}})))
    assert load_settings().api.port == 8300


def test_the_deploy_scripts_variables_are_not_configuration(tmp_path: Path) -> None:
    settings = load_settings(config(tmp_path), {"CITYWATCH_DATA_DIR": "/elsewhere", "CITYWATCH_UID": "10001"})
    assert settings.store.data_dir == tmp_path / "data"  # the default, beside the configuration file


def test_secrets_come_from_files_without_the_trailing_line_break(tmp_path: Path) -> None:
    settings = load_settings(config(tmp_path), {
        "CITYWATCH_MQTT__PASSWORD_FILE": str(secret_file(tmp_path, "mqtt_password", f"{SECRET}\n")),
        "CITYWATCH_STORE__INFLUXDB__TOKEN_FILE": str(secret_file(tmp_path, "token", f"{SECRET}-t\r\n")),
        "CITYWATCH_STORE__INFLUXDB__PASSWORD_FILE": str(secret_file(tmp_path, "influx_pw", f"{SECRET}-p")),
    })
    assert settings.mqtt.password is not None and settings.mqtt.password.get_secret_value() == SECRET
    token, password = settings.store.influxdb.token, settings.store.influxdb.password
    assert token is not None and token.get_secret_value() == f"{SECRET}-t"
    assert password is not None and password.get_secret_value() == f"{SECRET}-p"


def test_any_key_can_come_from_a_file(tmp_path: Path) -> None:
    servers = secret_file(tmp_path, "servers", '["kafka-0:9092", "kafka-1:9092"]\n')
    username = secret_file(tmp_path, "username", "ingest\n")
    environ = {"CITYWATCH_BUS__KAFKA__BOOTSTRAP_SERVERS_FILE": str(servers),
               "CITYWATCH_MQTT__USERNAME_FILE": str(username)}
    settings = load_settings(config(tmp_path), environ)
    assert settings.bus.kafka.bootstrap_servers == ["kafka-0:9092", "kafka-1:9092"]
    assert settings.mqtt.username == "ingest"
    # check-config shows no file's content, whatever the key.
    assert describe(settings, environment_values(environ)) == [
        f'  bus.kafka.bootstrap_servers = "**********"  <- file {servers} '
        "(CITYWATCH_BUS__KAFKA__BOOTSTRAP_SERVERS_FILE)",
        f'  mqtt.username = "**********"  <- file {username} (CITYWATCH_MQTT__USERNAME_FILE)',
    ]


def test_a_key_whose_name_ends_in_file_is_set_by_its_own_variable(tmp_path: Path) -> None:
    (tmp_path / "more.yaml").write_text("- {device_id: bin-9, kind: bin}\n")
    settings = load_settings(config(tmp_path), {"CITYWATCH_DEVICES_FILE": "more.yaml",
                                                "CITYWATCH_MQTT__TLS__CA_FILE": "/etc/citywatch/ca.crt"})
    assert [device.device_id for device in settings.devices] == ["bin-9"]  # relative to the config file
    assert settings.mqtt.tls.ca_file == Path("/etc/citywatch/ca.crt")


def test_a_key_given_as_variable_and_as_file_is_refused(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "mqtt_password", SECRET)
    with pytest.raises(ConfigError) as error:
        load_settings(config(tmp_path), {"CITYWATCH_MQTT__PASSWORD": SECRET,
                                         "CITYWATCH_MQTT__PASSWORD_FILE": str(path)})
    assert str(error.value) == (
        "environment: CITYWATCH_MQTT__PASSWORD and CITYWATCH_MQTT__PASSWORD_FILE both set mqtt.password: "
        "give the value once, in the variable or in the file")


def test_names_are_compared_in_upper_case_so_one_key_cannot_be_set_twice(tmp_path: Path) -> None:
    assert load_settings(config(tmp_path), {"CITYWATCH_api__port": "8100"}).api.port == 8100
    with pytest.raises(ConfigError) as error:
        load_settings(config(tmp_path), {"CITYWATCH_API__PORT": "8100", "CITYWATCH_api__port": "8200"})
    assert str(error.value) == ("environment: CITYWATCH_API__PORT and CITYWATCH_api__port both set api.port: "
                                "give the value once")


def test_a_missing_or_unreadable_file_names_the_variable_and_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "secrets" / "absent"
    with pytest.raises(ConfigError) as error:
        load_settings(config(tmp_path), {"CITYWATCH_STORE__INFLUXDB__TOKEN_FILE": str(missing)})
    assert str(error.value) == (f"environment: CITYWATCH_STORE__INFLUXDB__TOKEN_FILE: cannot read {missing}: "
                                "No such file or directory")
    with pytest.raises(ConfigError, match=f"CITYWATCH_MQTT__PASSWORD_FILE: cannot read {tmp_path}: "):
        load_settings(config(tmp_path), {"CITYWATCH_MQTT__PASSWORD_FILE": str(tmp_path)})  # a directory


def test_a_file_that_is_not_text_or_not_json_is_reported_without_its_content(tmp_path: Path) -> None:
    binary = secret_file(tmp_path, "binary", SECRET.encode() + b"\xff\xfe")
    with pytest.raises(ConfigError) as error:
        load_settings(config(tmp_path), {"CITYWATCH_MQTT__PASSWORD_FILE": str(binary)})
    assert str(error.value) == f"environment: CITYWATCH_MQTT__PASSWORD_FILE: {binary} is not UTF-8 text"
    unfinished = f'[{{"pattern": "{SECRET}"'
    broken = secret_file(tmp_path, "routes", unfinished)
    with pytest.raises(ConfigError) as error:
        load_settings(config(tmp_path), {"CITYWATCH_INGEST__ROUTES_FILE": str(broken)})
    assert str(error.value).startswith("environment: CITYWATCH_INGEST__ROUTES_FILE: not valid JSON (")
    assert str(error.value).endswith(f" at line 1, column {len(unfinished) + 1})")
    assert SECRET not in str(error.value)
    with pytest.raises(ConfigError) as error:
        load_settings(config(tmp_path), {"CITYWATCH_DEVICES": f'[{{"device_id": "{SECRET}"'})
    assert str(error.value).startswith("environment: CITYWATCH_DEVICES: not valid JSON (")
    assert SECRET not in str(error.value)


@pytest.mark.parametrize(("variable", "closest"), [
    ("CITYWATCH_MQTT__PASWORD", "CITYWATCH_MQTT__PASSWORD"),
    ("CITYWATCH_MQTT_URL", "CITYWATCH_MQTT__URL"),
    ("CITYWATCH_MQT__URL", "CITYWATCH_MQTT__URL"),
    ("CITYWATCH_STORE__INFLUXDB__TOKEN_FIEL", "CITYWATCH_STORE__INFLUXDB__TOKEN_FILE"),
    ("CITYWATCH_BUS__KAFKA__BOOTSTRAP_SERVER", "CITYWATCH_BUS__KAFKA__BOOTSTRAP_SERVERS"),
])
def test_an_unknown_variable_is_refused_with_the_closest_name(variable: str, closest: str,
                                                               tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(config(tmp_path), {variable: SECRET})
    assert str(error.value).startswith(
        f"environment: {variable} names no configuration key (did you mean {closest}?)")
    assert SECRET not in str(error.value)


def test_a_variable_like_no_key_at_all_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(config(tmp_path), {"CITYWATCH_XYZ": "1"})
    assert str(error.value).startswith("environment: CITYWATCH_XYZ names no configuration key "
                                       "(docs/configuration.md lists the rules)")


def test_a_section_or_a_key_inside_a_json_value_is_refused_with_the_variable_to_use(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^environment: CITYWATCH_MQTT__TLS: mqtt\.tls is a section, not a "
                       r"key: set its keys one by one \(e\.g\. CITYWATCH_MQTT__TLS__ENABLED\)$"):
        load_settings(config(tmp_path), {"CITYWATCH_MQTT__TLS": '{"enabled": true}'})
    with pytest.raises(ConfigError, match=r"^environment: CITYWATCH_RULES__ZONE_THRESHOLDS__CENTRE: rules\."
                       r"zone_thresholds is set as a whole, in JSON: CITYWATCH_RULES__ZONE_THRESHOLDS$"):
        load_settings(config(tmp_path), {"CITYWATCH_RULES__ZONE_THRESHOLDS__CENTRE": "{}"})


def test_an_invalid_value_names_the_variable_and_quotes_no_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(config(tmp_path), {"CITYWATCH_MQTT__URL": f"ftp://ingest:{SECRET}@broker:1883",
                                         "CITYWATCH_API__PORT": "eighty"})
    message = str(error.value)
    assert message.startswith(f"invalid configuration in {tmp_path / 'city.yaml'} and the environment:")
    assert "  mqtt.url (set by CITYWATCH_MQTT__URL): expected mqtt://host:port" in message
    assert "  api.port (set by CITYWATCH_API__PORT): expected an integer" in message
    assert SECRET not in message


def test_a_value_set_inside_a_file_entry_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^environment: CITYWATCH_BUS__KIND: bus in the configuration file "
                       "is not a mapping, so no key can be set in it$"):
        load_settings(config(tmp_path, {"bus": ["kafka"]}), {"CITYWATCH_BUS__KIND": "kafka"})


def test_the_secrets_have_variables_named_after_their_keys() -> None:
    keys = config_keys(Settings)
    assert keys["CITYWATCH_MQTT__PASSWORD"] == ("mqtt", "password")
    assert keys["CITYWATCH_STORE__INFLUXDB__TOKEN"] == ("store", "influxdb", "token")
    assert keys["CITYWATCH_STORE__INFLUXDB__PASSWORD"] == ("store", "influxdb", "password")
    assert "CITYWATCH_MQTT" not in keys  # a section is set key by key


def test_the_summary_shows_where_each_value_came_from_and_no_secret(tmp_path: Path) -> None:
    environ = {"CITYWATCH_MQTT__URL": "mqtt://broker:1883", "CITYWATCH_MQTT__PASSWORD": SECRET,
               "CITYWATCH_STORE__INFLUXDB__TOKEN_FILE": str(secret_file(tmp_path, "token", SECRET))}
    settings = load_settings(config(tmp_path), environ)
    assert describe(settings, environment_values(environ)) == [
        '  mqtt.password = "**********"  <- CITYWATCH_MQTT__PASSWORD',
        '  mqtt.url = "mqtt://broker:1883"  <- CITYWATCH_MQTT__URL',
        f'  store.influxdb.token = "**********"  <- file {tmp_path}/secrets/token '
        "(CITYWATCH_STORE__INFLUXDB__TOKEN_FILE)",
    ]


def test_the_variables_that_are_not_configuration_are_the_documented_ones() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    table = page.split("**Variables that are not configuration.**")[1].split("\n\n")[1]
    documented = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    assert documented == set(NOT_CONFIGURATION)
