"""Runs one citywatch role (`citywatch ingest | process | api`) as a real process, as a service would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.process import CitywatchCommand, free_port


class RoleProcess(CitywatchCommand):
    def __init__(self, workdir: Path, role: str, config: dict[str, Any], name: str | None = None) -> None:
        self.role = role
        port = free_port()
        if role == "api":
            # Open access unless the test configures auth: these processes listen on loopback only.
            api = {"auth": "disabled", **config.get("api", {}), "host": "127.0.0.1", "port": port}
            config = {**config, "api": api}
        else:
            config = {**config, "roles": {"status_host": "127.0.0.1", "status_port": port}}
        super().__init__(workdir, name or role, config, port)

    def arguments(self) -> list[str]:
        arguments = [self.role, "--config", str(self.config_path)]
        if self.role == "process":
            arguments += ["--client-id", self.name]
        return arguments
