"""Store configuration: every example config loads; InfluxDB secrets are typed; bad values are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import ConfigError, InfluxApi, StoreKind, load_settings

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("citywatch*.yaml")), ids=lambda p: p.name)
def test_every_example_config_loads(path: Path) -> None:
    load_settings(path)


def test_the_influxdb_example_selects_influxdb() -> None:
    store = load_settings(CONFIGS / "citywatch-influxdb.yaml").store
    assert store.kind is StoreKind.INFLUXDB and store.influxdb.api is InfluxApi.AUTO
    assert store.retention.raw_readings_days < store.retention.rollup_days


def test_a_token_is_never_printed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("store: {kind: influxdb, influxdb: {token: s3cret, org: city}}\n")
    settings = load_settings(path)
    assert "s3cret" not in repr(settings) and settings.store.influxdb.token is not None
    assert settings.store.influxdb.token.get_secret_value() == "s3cret"


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("store: {kind: influx}", "store.kind"),
        ("store: {influxdb: {batch_points: 0}}", "store.influxdb.batch_points"),
        ("store: {influxdb: {buffer: 10}}", "store.influxdb.buffer"),
        ("store: {retention: {raw_readings_days: 0}}", "store.retention.raw_readings_days"),
    ],
)
def test_bad_store_settings_name_the_field(tmp_path: Path, yaml_text: str, field: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_settings(path)
