"""Runs one citywatch role (`citywatch ingest | process | api`) as a real process, as a service would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.process import REPO, free_port
from tests.support.wait import wait_for


class RoleProcess:
    def __init__(self, workdir: Path, role: str, config: dict[str, Any], name: str | None = None) -> None:
        self.role = role
        self.name = name or role
        self.port = free_port()
        if role == "api":
            config = {**config, "api": {"host": "127.0.0.1", "port": self.port}}
        else:
            config = {**config, "roles": {"status_host": "127.0.0.1", "status_port": self.port}}
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{self.name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"{self.name}.log"
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30, wait_ready: bool = True) -> RoleProcess:
        command = [sys.executable, "-m", "citywatch.cli", self.role, "--config", str(self.config_path)]
        if self.role == "process":
            command += ["--client-id", self.name]
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if wait_ready:
            wait_for(self.ready, timeout_s, 0.1, f"citywatch {self.name} to be ready (log: {self.log_path})")
        return self

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"citywatch {self.name} exited with {self.process.returncode}:\n"
                                 f"{self.log()}")
        try:
            return httpx.get(self.base_url + "/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.base_url + path, params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def get_text(self, path: str) -> str:
        response = httpx.get(self.base_url + path, timeout=10)
        response.raise_for_status()
        return response.text

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM, as a service manager would; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout_s)
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL: no clean-up, no checkpoint, no leaving the group."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
