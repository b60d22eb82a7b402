"""Configurations that load but drop or hide data: check-config and the start-up log name the field, say
what happens and how to fix it; a configuration without the mistake has no finding."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from citywatch.cli import main
from citywatch.config_findings import Finding, Severity, filter_covers, find
from citywatch.roles import IngestRole, ProcessRole
from core.settings import RuleSettings, load_settings
from processors.catalogue import RULE_SECTIONS

REPO = Path(__file__).resolve().parents[2]
SHIPPED = [*sorted((REPO / "configs").glob("citywatch*.yaml")), REPO / "deploy" / "config" / "citywatch.yaml"]

LORAWAN_ROUTES = {"routes": [{"pattern": "v3/+/devices/+/up", "codec": "tts"}]}
EM310 = {
    "description": "Milesight EM310-UDL",
    "fields": [{"source": "distance", "attribute": "distance_mm", "unit": "mm"},
               {"source": "battery", "attribute": "battery_pct", "unit": "%"}],
}


def bin_device(device_id: str = "bin-1", **fields: Any) -> dict[str, Any]:
    return {"device_id": device_id, "kind": "bin", "model": "Milesight EM310-UDL",
            "install": {"bin_depth_mm": 1100}, "tags": {"zone": "market"}, **fields}


def lorawan_config(*devices: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {"ingest": LORAWAN_ROUTES, "vendor_maps": {"Milesight EM310-UDL": EM310},
            "devices": list(devices) or [bin_device()], **sections}


def write(tmp_path: Path, config: dict[str, Any], name: str = "citywatch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def findings_of(tmp_path: Path, config: dict[str, Any]) -> list[Finding]:
    return find(load_settings(write(tmp_path, config), environ={}))


def check_config(tmp_path: Path, config: dict[str, Any], capsys: pytest.CaptureFixture[str],
                 *options: str) -> tuple[int, str]:
    code = main(["check-config", *options, str(write(tmp_path, config))])
    return code, capsys.readouterr().out


# Each case: a configuration with one mistake, the severity, the field named and words of the fix.
CASES: dict[str, tuple[dict[str, Any], Severity, str, str]] = {
    "route shadowed by an earlier one": (
        {"ingest": {"routes": [{"pattern": "sensors/#", "codec": "senml"},
                               {"pattern": "sensors/ttn/+/up", "codec": "tts"}]}},
        Severity.ERROR, "ingest.routes[1].pattern", "move routes[1] above routes[0]"),
    "route pattern that is no MQTT filter": (
        {"ingest": {"routes": [{"pattern": "sensors/#/up", "codec": "senml"}]}},
        Severity.ERROR, "ingest.routes[0].pattern", "write a filter whose + and # fill whole levels"),
    "route by DevEUI while devices are registered by name": (
        lorawan_config(ingest={"routes": [{"pattern": "v3/+/devices/+/up", "codec": "tts",
                                           "lorawan_device_id": "eui"}]}),
        Severity.WARNING, "ingest.routes[0].lorawan_device_id", "set lorawan_device_id: name"),
    "stuck-sensor attributes of a kind it never sees": (
        {"rules": {"stuck_sensor": {"attributes": {"bins": ["fill_pct"]}}}},
        Severity.WARNING, "rules.stuck_sensor.attributes.bins", "use one of those kinds"),
    "model that names no vendor map": (
        lorawan_config(bin_device(model="EM310-UD")),
        Severity.WARNING, "devices[id=bin-1].model", "set model to the name of a vendor map"),
    "bin without a model beside bins with maps": (
        lorawan_config(bin_device(), bin_device("bin-2", model=None)),
        Severity.WARNING, "devices[id=bin-2].model", "set model to the name of a vendor map"),
    "mapped attribute no rule reads": (
        lorawan_config(vendor_maps={"Milesight EM310-UDL": {
            "fields": [{"source": "distance", "attribute": "distance"}]}}),
        Severity.WARNING, "vendor_maps['Milesight EM310-UDL'].fields[0].attribute",
        "set attribute: distance_mm and its unit"),
    "bin distance without the bin's depth": (
        lorawan_config(bin_device(install={})),
        Severity.WARNING, "devices[id=bin-1].install.bin_depth_mm", "add install: {bin_depth_mm:"),
    "device kind no rule judges": (
        {"devices": [{"device_id": "bin-1", "kind": "bins"}]},
        Severity.WARNING, "devices[id=bin-1].kind", "use a kind the rules judge"),
    "threshold of a rule that judges other kinds": (
        {"devices": [bin_device(thresholds={"toilet_odour": {"nh3_mgm3": 0.3}})]},
        Severity.WARNING, "devices[id=bin-1].thresholds.toilet_odour", "remove them, or move them"),
    "zone thresholds of a zone no device has": (
        {"devices": [bin_device()],
         "rules": {"zone_thresholds": {"markets": {"bin_overflow": {"open_pct": 80}}}}},
        Severity.WARNING, "rules.zone_thresholds.markets", "tag the zone's devices with zone: markets"),
    "kind thresholds of a kind no device has": (
        {"devices": [bin_device()],
         "rules": {"kind_thresholds": {"bins": {"bin_overflow": {"open_pct": 80}}}}},
        Severity.WARNING, "rules.kind_thresholds.bins", "use the kind the devices are registered with"),
    "kind thresholds of a rule that judges other kinds": (
        {"devices": [bin_device()],
         "rules": {"kind_thresholds": {"bin": {"toilet_odour": {"nh3_mgm3": 0.3}}}}},
        Severity.WARNING, "rules.kind_thresholds.bin.toilet_odour", "remove them, or move them"),
    "case route for a violation type nothing makes": (
        {"cases": {"routes": [{"match": {"types": ["bin_overfow"]}, "department": "sanitation",
                               "category": "0101"}]}},
        Severity.ERROR, "cases.routes[0].match.types[0]", "name a violation type ('bin_overflow'?)"),
    "case route an earlier route always takes first": (
        {"cases": {"routes": [
            {"match": {"types": ["bin_overflow"]}, "department": "sanitation", "category": "0101"},
            {"match": {"types": ["bin_overflow"], "grids": ["FT-11"]}, "department": "parks",
             "category": "0101"}]}},
        Severity.ERROR, "cases.routes[1].match", "move routes[1] above routes[0]"),
    "CORS for every web page": (
        {"api": {"auth": "required", "cors_origins": ["*"]}},
        Severity.WARNING, "api.cors_origins", "list the origins of your own pages instead"),
}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_check_config_names_the_field_and_the_fix(case: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config, severity, field, fix = CASES[case]
    code, out = check_config(tmp_path, config, capsys)
    lines = [line for line in out.splitlines() if line.startswith(f"{severity}: {field}: ")]
    assert len(lines) == 1, out
    assert f"Fix: {fix}" in lines[0], lines[0]
    assert code == (1 if severity is Severity.ERROR else 0)


# The same configurations without the mistake.
CLEAN: dict[str, dict[str, Any]] = {
    "routes in the right order": {"ingest": {"routes": [{"pattern": "sensors/ttn/+/up", "codec": "tts"},
                                                        {"pattern": "sensors/#", "codec": "senml"}]}},
    "model named exactly": lorawan_config(bin_device()),
    "route by DevEUI and devices registered by DevEUI": lorawan_config(
        bin_device("ttn-A84041000181C3B4"),
        ingest={"routes": [{"pattern": "v3/+/devices/+/up", "codec": "tts", "lorawan_device_id": "eui",
                            "device_id_prefix": "ttn-"}]}),
    "stuck-sensor attributes of its kinds": {
        "rules": {"stuck_sensor": {"attributes": {"bin": ["fill_pct"]}}}},
    "model in another case": lorawan_config(bin_device(model="milesight em310-udl")),
    "other models when no codec picks a map": {
        "vendor_maps": {"Milesight EM310-UDL": EM310},
        "devices": [bin_device(), bin_device("bin-2", model="EM310-UDL")]},
    "a device of another kind with a model": lorawan_config(
        bin_device(), {"device_id": "air-1", "kind": "air", "model": "generic PM sensor"}),
    "thresholds that exist": {
        "devices": [bin_device(thresholds={"bin_overflow": {"open_pct": 80}}),
                    {"device_id": "air-1", "kind": "air",
                     "thresholds": {"air_quality_exceedance": {"pm25_24h_ugm3": 50}}}],
        "rules": {"zone_thresholds": {"market": {"bin_fire": {"open_c": 70}}},
                  "kind_thresholds": {"bin": {"stuck_sensor": {"readings": 20}}}}},
    "case routes from the specific to the general": {"cases": {"routes": [
        {"match": {"types": ["bin_overflow"], "hours": ["22:00-24:00"]}, "department": "night",
         "category": "0101"},
        {"match": {"types": ["bin_overflow"], "grids": ["FT-11"]}, "department": "sanitation",
         "category": "0101"},
        {"match": {"types": ["bin_overflow", "illegal_parking"]}, "department": "city", "category": "09"}]}},
    "CORS for the city's own console": {"api": {"auth": "required",
                                                "cors_origins": ["https://console.city.example"]}},
}


@pytest.mark.parametrize("case", CLEAN, ids=str)
def test_a_configuration_without_the_mistake_has_no_finding(case: str, tmp_path: Path) -> None:
    assert findings_of(tmp_path, CLEAN[case]) == []


def test_a_mapped_attribute_kept_for_the_record_is_a_note(tmp_path: Path) -> None:
    config = lorawan_config(vendor_maps={"Milesight EM310-UDL": {"fields": [
        {"source": "distance", "attribute": "distance_mm", "unit": "mm"},
        {"source": "Bat", "attribute": "battery_v", "unit": "V"}]}})
    [finding] = findings_of(tmp_path, config)
    assert finding.severity is Severity.NOTE
    assert finding.field == "vendor_maps['Milesight EM310-UDL'].fields[1].attribute"
    assert "'battery_v', which no enabled rule reads for bin devices" in finding.problem


def test_a_kind_whose_rules_are_disabled_is_not_judged(tmp_path: Path) -> None:
    config = {"devices": [{"device_id": "air-1", "kind": "air"}],
              "rules": {"air_quality": {"enabled": False}, "construction_dust": {"enabled": False}}}
    [finding] = findings_of(tmp_path, config)
    assert finding.field == "devices[id=air-1].kind"


@pytest.mark.parametrize(
    ("general", "specific", "covers"),
    [("a/#", "a/b/c", True), ("a/#", "a", True), ("#", "a/+", True), ("a/+", "a/b", True),
     ("a/+", "a/+", True), ("a/b", "a/+", False), ("a/+", "a/b/c", False), ("a/+", "a/#", False),
     ("a/b", "a/b", True), ("a/b", "a/c", False), ("a/+/c", "a/b", False)],
)
def test_a_topic_filter_covers_another(general: str, specific: str, covers: bool) -> None:
    assert filter_covers(general, specific) is covers


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_the_shipped_configurations_have_no_warning(path: Path) -> None:
    # Notes are allowed: the Dragino map keeps the battery voltage and interrupt flag for the record.
    assert [str(f) for f in find(load_settings(path)) if f.severity is not Severity.NOTE] == []


def test_every_rule_is_listed_by_its_settings_section_and_reads_documented_attributes() -> None:
    assert set(RULE_SECTIONS) == set(RuleSettings.model_fields) - {"zone_thresholds", "kind_thresholds"}
    model = (REPO / "docs" / "model.md").read_text()
    for rule in RULE_SECTIONS.values():
        # A typo in a declaration would make check-config call a real attribute unread.
        assert [name for name in rule.reads_attributes if f"`{name}`" not in model] == [], rule.name


# --- paths ----------------------------------------------------------------------------------------


def test_relative_paths_are_taken_from_the_configuration_files_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    settings = load_settings(write(folder, {
        "store": {"data_dir": "state"},
        "mqtt": {"tls": {"enabled": True, "ca_file": "certs/ca.crt", "cert_file": "certs/me.crt",
                         "key_file": "certs/me.key"}},
        "relational": {"postgresql": {"ssl_root_cert": "certs/pg.crt"}},
    }), environ={})
    assert settings.store.data_dir == folder / "state"
    tls = settings.mqtt.tls
    assert (tls.ca_file, tls.cert_file, tls.key_file) == (
        folder / "certs/ca.crt", folder / "certs/me.crt", folder / "certs/me.key")
    assert settings.relational.postgresql.ssl_root_cert == folder / "certs/pg.crt"
    assert settings.legacy_paths == () and find(settings) == []


def test_a_data_directory_found_only_in_the_working_directory_is_used_and_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (tmp_path / "data").mkdir()  # where an earlier version kept it: relative to the working directory
    monkeypatch.chdir(tmp_path)
    path = write(folder, {"store": {"data_dir": "data"}})
    assert load_settings(path, environ={}).store.data_dir == tmp_path / "data"
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning: store.data_dir: 'data' is relative" in out
    assert f"Fix: move {tmp_path / 'data'} to {folder / 'data'}, or write the absolute path" in out
    # Once moved beside the configuration, that one is used and nothing is said.
    (tmp_path / "data").rename(folder / "data")
    settings = load_settings(path, environ={})
    assert settings.store.data_dir == folder / "data" and find(settings) == []


def test_a_data_directory_given_on_the_command_line_is_the_working_directorys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    settings = load_settings(write(folder, {"store": {"data_dir": "data"}}), environ={})
    assert [legacy.field for legacy in settings.legacy_paths] == ["store.data_dir"]
    # --data-dir elsewhere: the working directory's, as for any command-line path; nothing to move.
    overridden = settings.with_overrides(store__data_dir=Path("elsewhere"))
    assert overridden.store.data_dir == Path("elsewhere")
    assert overridden.legacy_paths == () and find(overridden) == []
    # Another override keeps the finding.
    assert len(find(settings.with_overrides(api__port=8100))) == 1


# --- the command and the roles ----------------------------------------------------------------------


def test_check_config_with_several_problems_exits_1_and_lists_them(tmp_path: Path) -> None:
    config = lorawan_config(
        bin_device(model="EM310-UD"),
        {"device_id": "odour-1", "kind": "odor"},
        ingest={"routes": [{"pattern": "#", "codec": "native"}, *LORAWAN_ROUTES["routes"]]},
    )
    path = write(tmp_path, config)
    result = subprocess.run([sys.executable, "-m", "citywatch.cli", "check-config", str(path)],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: valid (2 devices, 1 vendor maps)"
    assert lines[1].startswith("error: ingest.routes[1].pattern: 'v3/+/devices/+/up' (tts) never decodes")
    assert any(line.startswith("warning: devices[id=bin-1].model: model 'EM310-UD' names no vendor map "
                               "(did you mean 'Milesight EM310-UDL'?)") for line in lines)
    assert any(line.startswith("warning: devices[id=odour-1].kind: no enabled rule judges readings of "
                               "kind 'odor' (did you mean 'odour'?)") for line in lines)
    assert lines[-1] == "1 error, 2 warnings, 0 notes"


def test_warnings_fail_check_config_only_when_strict(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = {"devices": [{"device_id": "bin-1", "kind": "bins"}]}
    assert check_config(tmp_path, config, capsys)[0] == 0
    assert check_config(tmp_path, config, capsys, "--strict")[0] == 1
    assert check_config(tmp_path, {"devices": [bin_device()]}, capsys, "--strict") == (
        0, f"{tmp_path / 'citywatch.yaml'}: valid (1 devices, 0 vendor maps)\n")


KAFKA_ROLES = {"bus": {"kind": "kafka"}, "mqtt": {"url": "mqtt://127.0.0.1:1883"}}


@pytest.mark.parametrize(("role", "build"), [("ingest", IngestRole), ("process", ProcessRole)])
def test_each_role_logs_the_findings_at_start_up(role: str, build: Any, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    config = {**KAFKA_ROLES, "store": {"data_dir": str(tmp_path / "data")},
              "devices": [{"device_id": "bin-1", "kind": "bins"}]}
    with caplog.at_level(logging.INFO, logger="citywatch.config"):
        build(load_settings(write(tmp_path, config), environ={}))
    [record] = [r for r in caplog.records if r.name == "citywatch.config"]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        f"configuration ({role}): warning: devices[id=bin-1].kind: no enabled rule judges readings of "
        "kind 'bins' (did you mean 'bin'?)")
