"""The api role refuses an alert output pointed at the bus's own violations topic (it reads that topic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from citywatch.roles import ApiRole
from core.settings import ConfigError, Settings


def test_the_kafka_alert_output_may_not_write_into_the_violations_topic_the_api_reads(tmp_path: Path) -> None:
    settings = Settings.model_validate({
        "bus": {"kind": "kafka"}, "store": {"data_dir": str(tmp_path)},
        "alerts": {"kafka": {"enabled": True, "topic": "citywatch.violations"}},
    })
    with pytest.raises(ConfigError, match=r"alerts\.kafka\.topic is citywatch\.violations"):
        ApiRole(settings)
