"""The embedded runtime in-process: start-up decisions a user notices."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from citywatch.runtime import EmbeddedRuntime
from core.settings import Settings
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def test_a_busy_mqtt_port_moves_the_embedded_broker_to_a_free_one(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as squatter:  # e.g. a system Mosquitto service already on 1883
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy_port = squatter.getsockname()[1]
        settings = Settings().with_overrides(store__data_dir=tmp_path, mqtt__embedded_port=busy_port,
                                             mqtt__embedded_broker="mosquitto")
        runtime = EmbeddedRuntime(settings)
        runtime.start()
        try:
            assert runtime.mqtt_url is not None and not runtime.mqtt_url.endswith(f":{busy_port}")
            wait_for(lambda: runtime.ingest is not None and runtime.ingest.subscribed, 10,
                     message="ingest subscribed on the moved broker")
            assert f"not port {busy_port}" in caplog.text
        finally:
            runtime.stop()
