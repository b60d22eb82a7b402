"""Configuration: every shipped config loads; mistakes stop the start with a message naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from citywatch.cli import main
from core.settings import DEFAULT_CONFIG_PATH, ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
# Every configuration a user is pointed at: the examples and the city set-up's (deploy/config, whose
# city files are links to configs/ there, as compose mounts them beside it).
SHIPPED = [*sorted(CONFIGS.glob("citywatch*.yaml")), REPO / "deploy" / "config" / "citywatch.yaml"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_configuration_is_valid(path: Path) -> None:
    settings = load_settings(path)
    assert settings.devices, "the demo configuration registers the simulated district"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_check_config_passes_on_every_shipped_configuration(path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # as a user runs it from a clone: `citywatch check-config deploy/config/...`
    assert main(["check-config", str(path.relative_to(REPO))]) == 0
    assert f"{path.relative_to(REPO)}: valid" in capsys.readouterr().out


def test_the_default_configuration_registers_the_simulated_district() -> None:
    settings = load_settings(DEFAULT_CONFIG_PATH)
    kinds = {device.kind for device in settings.devices}
    assert {"bin", "air", "detector"} <= kinds
    assert all(device.tags.get("department") for device in settings.devices)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "citywatch.yaml"
    path.write_text(text)
    return path


def test_an_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    unknown = r"rules\.bin_overflow\.open_pc: unknown key \(did you mean 'open_pct'\?\)"
    with pytest.raises(ConfigError, match=unknown):
        load_settings(write(tmp_path, "rules:\n  bin_overflow:\n    open_pc: 80\n"))


def test_a_bad_value_is_an_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.url: expected mqtt://host:port"):
        load_settings(write(tmp_path, "mqtt:\n  url: http://broker\n"))
    with pytest.raises(ConfigError, match=r"pipeline\.allowed_lateness_ms: must be at least 0, got -1"):
        load_settings(write(tmp_path, "pipeline:\n  allowed_lateness_ms: -1\n"))


def test_a_device_registered_twice_is_an_error(tmp_path: Path) -> None:
    text = "devices:\n  - {device_id: bin-1, kind: bin}\n  - {device_id: bin-1, kind: bin}\n"
    with pytest.raises(ConfigError, match="device ids registered twice: bin-1"):
        load_settings(write(tmp_path, text))


def test_devices_file_is_read_relative_to_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "more.yaml").write_text("- {device_id: bin-9, kind: bin}\n")
    settings = load_settings(write(tmp_path, "devices_file: more.yaml\n"))
    assert [device.device_id for device in settings.devices] == ["bin-9"]


def test_missing_file_and_bad_yaml_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "mqtt: [unclosed\n"))


def test_check_config_command_exits_2_with_the_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(write(tmp_path, "bus:\n  kind: carrier-pigeon\n"))]) == 2
    assert "bus.kind: expected one of 'inprocess' or 'kafka'" in capsys.readouterr().err
    assert main(["check-config", str(DEFAULT_CONFIG_PATH)]) == 0
