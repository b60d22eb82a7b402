"""`citywatch up --simulate` with the shipped configuration, as `make run` starts it: within a minute
the API lists violations of sanitation, environment and traffic rules alike (the full list of what the
demo shows is checked without a process in tests/unit/test_demo_feed.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.process import REPO, CitywatchProcess, free_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

# A few kinds from each department's rules, each within a minute of start.
EXPECTED = {"bin_overflow", "bin_fire", "water_black_odour", "toilet_odour", "red_light",
            "pedestrian_red", "yield_crosswalk", "speeding", "no_helmet", "congestion", "device_offline"}


def shipped_config() -> dict[str, Any]:
    """configs/citywatch.yaml with its files found from anywhere and its own embedded broker."""
    configs = REPO / "configs"
    config = yaml.safe_load((configs / "citywatch.yaml").read_text())
    config["devices_file"] = str(configs / config["devices_file"])
    config["vendor_maps_file"] = str(configs / config["vendor_maps_file"])
    for key in ("grids_file", "districts_file"):
        config["geo"][key] = str(configs / config["geo"][key])
    config["mqtt"] = {**config["mqtt"], "url": None, "embedded_port": free_port()}
    return config


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[CitywatchProcess]:
    process = CitywatchProcess(tmp_path, shipped_config(), simulate=True).start(timeout_s=60)
    yield process
    process.kill()


def test_the_demo_stores_violations_of_every_department_within_a_minute(demo: CitywatchProcess):
    seen: set[str] = set()

    def shown() -> bool:
        items = demo.get("/v1/violations", limit=1000)["items"]
        seen.update(item["type"] for item in items)
        return seen >= EXPECTED

    wait_for(shown, 75, 1.0, f"violations of {sorted(EXPECTED)} (log: {demo.log_path})")
    air = demo.get("/v1/violations", type="air_quality_exceedance")["items"]
    # Judged on the readings of the hours before start: the roadside sensor in its pollution episode.
    assert "air-0001" in {item["device_id"] for item in air}
