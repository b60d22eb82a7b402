"""Index settings (`indices:`): the defaults load, and a wrong weight, band order or counter is refused at
load with a message that names what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from core.index_settings import METHOD
from core.settings import ConfigError, load_settings


def write(tmp_path: Path, indices: dict[str, Any]) -> Path:
    path = tmp_path / "citywatch.yaml"
    path.write_text(yaml.safe_dump({"indices": indices}))
    return path


def one_index(**component: Any) -> dict[str, Any]:
    base = {"name": "red_light", "weight": 1, "observed": "stop_line_crossings",
            "breaking": "red_light_crossings", "best_rate": 0, "worst_rate": 0.02}
    return {"definitions": {"traffic": {"title": "Traffic", "components": [{**base, **component}]}}}


def test_the_defaults_define_a_traffic_and_a_sanitation_index_with_a_versioned_method() -> None:
    indices = load_settings().indices
    assert set(indices.definitions) == {"traffic", "sanitation"}
    assert [c.name for c in indices.definitions["traffic"].components][:2] == ["red_light", "yield_crosswalk"]
    assert indices.method_version.startswith(f"{METHOD}+")


def test_a_changed_weight_changes_the_method_version(tmp_path: Path) -> None:
    first = load_settings(write(tmp_path, one_index(weight=1))).indices.method_version
    second = load_settings(write(tmp_path, one_index(weight=2))).indices.method_version
    assert first != second


def test_a_weight_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"indices\.definitions\.traffic\.components\.0\.weight: must be "
                                          r"greater than 0(\.0)?, got 0"):
        load_settings(write(tmp_path, one_index(weight=0)))


def test_an_unknown_counter_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"component 'red_light': unknown exposure counter\(s\) "
                                          r"red_light_runs; known: .*stop_line_crossings"):
        load_settings(write(tmp_path, one_index(breaking="red_light_runs")))


def test_a_component_takes_counters_or_a_case_rate_not_both(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="component 'red_light' needs either observed and breaking counters "
                                          "or a case_rate, not both"):
        load_settings(write(tmp_path, one_index(case_rate="closure_rate")))
    with pytest.raises(ConfigError, match="best_rate and worst_rate must differ"):
        load_settings(write(tmp_path, one_index(worst_rate=0)))


def test_bands_must_run_from_the_best_down_to_zero(tmp_path: Path) -> None:
    config = one_index()
    config["definitions"]["traffic"]["bands"] = [{"grade": "good", "min_score": 60},
                                                 {"grade": "excellent", "min_score": 90},
                                                 {"grade": "fail", "min_score": 0}]
    with pytest.raises(ConfigError, match=r"bands must be ordered from the highest min_score down.*"
                                          r"got \[60\.0, 90\.0, 0\.0\]"):
        load_settings(write(tmp_path, config))
    config["definitions"]["traffic"]["bands"] = [{"grade": "pass", "min_score": 60}]
    with pytest.raises(ConfigError, match=r"the last at 0; got \[60\.0\]"):
        load_settings(write(tmp_path, config))


def test_a_misspelt_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"indices\.ranking\.min_coverag: unknown key \(did you mean "
                                          r"'min_coverage'\?\)"):
        load_settings(write(tmp_path, {"ranking": {"min_coverag": 0.5}}))
