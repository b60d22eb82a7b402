"""Runs `citywatch up` as a real process on free ports, the way a user starts it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Self

import httpx
import yaml

from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listens_on(session_id: int, port: int) -> bool:
    """Whether a process of the session `session_id` (the command and whatever it started) holds a
    socket listening on `port` (on any address, IPv4 or IPv6), from /proc: the kernel's socket tables give
    the listeners' inodes, a process's descriptors name the inodes it holds."""
    wanted = f":{port:04X}"
    inodes = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():  # no IPv6 in this kernel
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(wanted) and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            # The session id is the sixth field after the command name, which may itself hold spaces.
            if int((process / "stat").read_text().rsplit(")", 1)[1].split()[3]) != session_id:
                continue
            if any(os.readlink(fd) in inodes for fd in (process / "fd").iterdir()):
                return True
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile, or not ours to read
    return False


def bins(*device_ids: str) -> list[dict[str, Any]]:
    return [{"device_id": d, "kind": "bin", "lat": 22.54, "lon": 114.05,
             "tags": {"grid": "FT-11", "district": "futian", "department": "sanitation"}} for d in device_ids]


class CitywatchCommand:
    """A `citywatch` subcommand run as a real process, with its own config file, log and HTTP port."""

    def __init__(self, workdir: Path, name: str, config: dict[str, Any], port: int,
                 environment: dict[str, str] | None = None) -> None:
        self.name = name
        self.environment = environment or {}  # set for this process only (CITYWATCH_... variables)
        self.port = port
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"{name}.log"
        self.base_url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def arguments(self) -> list[str]:
        """The subcommand and its options, after `citywatch`."""
        raise NotImplementedError

    def start(self, timeout_s: float = 30, wait_ready: bool = True) -> Self:
        command = [sys.executable, "-m", "citywatch.cli", *self.arguments()]
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            # A session of its own, so that kill() can end it with everything it started.
            self.process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **self.environment, "PYTHONUNBUFFERED": "1"},
                                            start_new_session=True)
        if wait_ready:
            wait_for(self.ready, timeout_s, 0.1, f"{self.name} to be ready (log: {self.log_path})")
        return self

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
        # The port was free when chosen, not reserved: after a restart, another test's server may have
        # taken it. Its /readyz would answer 200 too, so first make sure the listener is this process's.
        if not _listens_on(self.process.pid, self.port):
            return False
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
        """SIGKILL: no clean-up, no checkpoint. To its whole process group, as a service manager or the
        end of a container does: a killed `citywatch up` cannot stop its embedded Mosquitto, which would
        otherwise go on running after the test."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class CitywatchProcess(CitywatchCommand):
    """`citywatch up`: the whole embedded stack."""

    def __init__(self, tmp_path: Path, config: dict[str, Any], *, simulate: bool = False) -> None:
        self.simulate = simulate  # `--simulate`: also publish the demo city's feed
        port = free_port()
        # Open access unless the test configures auth: these processes listen on loopback only.
        api = {"auth": "disabled", **config.get("api", {}), "host": "127.0.0.1", "port": port}
        store = {**config.get("store", {}), "data_dir": str(tmp_path / "data")}
        config = {**config, "api": api, "store": store}
        super().__init__(tmp_path, "citywatch", config, port)

    def arguments(self) -> list[str]:
        return ["up", "--config", str(self.config_path), *(["--simulate"] if self.simulate else [])]
