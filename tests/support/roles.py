"""Runs one citywatch role (`citywatch ingest | process | api`) as a real process, as a service would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.settings import KafkaSettings, PostgresSettings
from tests.support.postgres import PASSWORD
from tests.support.process import CitywatchCommand, free_port


def kafka_config(kafka: KafkaSettings, workdir: Path, mosquitto_url: str | None = None,
                 **sections: Any) -> dict[str, Any]:
    """A configuration for processes in the Kafka set-up: the bus; one data directory under `workdir`
    (processes given the same one share the embedded relational stores, as api replicas on one host do);
    with `mosquitto_url`, ingest's broker and a client id of the test's own; windows that close 200 ms
    after their events, so that violations come within a test. `sections` add or replace sections."""
    config: dict[str, Any] = {"bus": {"kind": "kafka", "kafka": kafka.model_dump(mode="json")},
                              "store": {"data_dir": str(workdir / "data")},
                              "pipeline": {"allowed_lateness_ms": 200}}
    if mosquitto_url is not None:
        config["mqtt"] = {"url": mosquitto_url, "client_id": f"citywatch-{workdir.name}"}
    return {**config, **sections}


def postgres_relational(postgres: PostgresSettings) -> dict[str, Any]:
    """The `relational` section for a test's PostgreSQL database (the settings hold no password)."""
    return {"kind": "postgresql", "postgresql": {**postgres.model_dump(mode="json"), "password": PASSWORD}}


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
