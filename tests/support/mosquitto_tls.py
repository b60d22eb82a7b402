"""A real Mosquitto with TLS, passwords and the ACL from deploy/mosquitto, on a free port."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingest.embedded_broker import find_mosquitto, free_port, wait_for_port
from tests.support.process import REPO

DEPLOY = REPO / "deploy" / "mosquitto"


@dataclass
class TlsBroker:
    port: int
    certs: Path
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _passwords(path: Path, users: dict[str, str]) -> None:
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(tool).exists():
        pytest.fail("mosquitto_passwd is missing; run `make test`, which installs mosquitto", pytrace=False)
    for n, (user, password) in enumerate(users.items()):
        flags = ["-c", "-b"] if n == 0 else ["-b"]
        subprocess.run([tool, *flags, str(path), user, password], check=True, capture_output=True)


def start_tls_broker(directory: Path, users: dict[str, str], clients: list[str]) -> TlsBroker:
    binary = find_mosquitto()
    if binary is None or shutil.which("openssl") is None:
        pytest.fail("mosquitto and openssl are needed; run `make test`, which installs them", pytrace=False)
    certs = directory / "certs"
    subprocess.run([str(DEPLOY / "gen-test-certs.sh"), str(certs), "localhost", *clients], check=True,
                   capture_output=True)
    _passwords(directory / "passwd", users)
    port = free_port()
    # The deployed configuration's security lines, with test paths and port (see deploy/mosquitto.conf).
    config = directory / "mosquitto.conf"
    config.write_text("\n".join([
        f"user {pwd.getpwuid(os.geteuid()).pw_name}",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {directory / 'passwd'}",
        f"acl_file {DEPLOY / 'acl.example'}",
        f"listener {port} 127.0.0.1",
        f"cafile {certs / 'ca.crt'}",
        f"certfile {certs / 'server.crt'}",
        f"keyfile {certs / 'server.key'}",
        "tls_version tlsv1.2",
        "require_certificate false",
        "persistence false",
        "log_dest stderr",
    ]) + "\n")
    log = directory / "mosquitto.log"
    with log.open("wb") as out:
        process = subprocess.Popen([binary, "-c", str(config)], stdout=out, stderr=subprocess.STDOUT)
    if not wait_for_port("127.0.0.1", port, 10, alive=lambda: process.poll() is None):
        process.kill()
        raise AssertionError(f"TLS mosquitto did not start:\n{log.read_text(errors='replace')}")
    return TlsBroker(port, certs, process, log)
