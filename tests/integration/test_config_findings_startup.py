"""`citywatch up` logs what in its configuration drops or hides data, and starts anyway."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from citywatch.runtime import EmbeddedRuntime
from core.settings import Settings, TopicRoute

pytestmark = pytest.mark.integration


def test_up_logs_a_shadowed_route_at_start_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    routes = [TopicRoute(pattern="city/#", codec="native"), TopicRoute(pattern="city/senml/#", codec="senml")]
    settings = Settings().with_overrides(store__data_dir=tmp_path, mqtt__embedded_port=0,
                                         ingest__routes=[route.model_dump() for route in routes])
    with caplog.at_level(logging.WARNING, logger="citywatch.config"):
        runtime = EmbeddedRuntime(settings)
        runtime.start()
        runtime.stop()
    [record] = [r for r in caplog.records if r.name == "citywatch.config"]
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith(
        "configuration (up): error: ingest.routes[1].pattern: 'city/senml/#' (senml) never decodes a "
        "message: routes[0] 'city/#' (native)")
