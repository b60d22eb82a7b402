"""A real InfluxDB server (Debian's `influxd`) in a temporary directory, on free ports."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx

from tests.support.process import free_port
from tests.support.wait import wait_for


def find_influxd() -> str | None:
    return shutil.which("influxd") or ("/usr/bin/influxd" if Path("/usr/bin/influxd").exists() else None)


class InfluxServer:
    """`start()`, `stop()` and `start()` again keep the same port and data (an outage, then recovery)."""

    def __init__(self, directory: Path) -> None:
        binary = find_influxd()
        if binary is None:
            raise RuntimeError("influxd is not installed; run `make test` (or: apt-get install -y influxdb)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = directory / "influxdb.conf"
        self.log_path = directory / "influxd.log"
        self.process: subprocess.Popen[bytes] | None = None
        # The RPC service (backup/restore) listens too: on its own free port, never the shared 8088.
        self.config_path.write_text(f"""
reporting-disabled = true
bind-address = "127.0.0.1:{free_port()}"
[meta]
  dir = "{directory / "meta"}"
[data]
  dir = "{directory / "data"}"
  wal-dir = "{directory / "wal"}"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
  max-row-limit = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
""")

    def start(self, timeout_s: float = 30) -> InfluxServer:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-config", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for(self._ready, timeout_s, 0.05, f"influxd on {self.url} (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"influxd exited with {self.process.returncode}: "
                f"{self.log_path.read_text(errors='replace')[-2000:]}"
            )
        try:
            return httpx.get(self.url + "/ping", timeout=1).status_code == 204
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def query(self, database: str, influxql: str) -> dict[str, object]:
        response = httpx.post(
            self.url + "/query", data={"db": database, "q": influxql, "epoch": "ns"}, timeout=10
        )
        response.raise_for_status()
        result: dict[str, object] = response.json()
        return result
