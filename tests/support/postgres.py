"""A real PostgreSQL server (Debian's `postgresql` package) in a temporary directory, on a free port.

`initdb` and `postgres` refuse to run as root, so under root the server runs as the unprivileged
`nobody` user, in a directory of its own under the system temp dir (pytest's own temp dirs are private
to root). Connections over TCP, as citywatch's, authenticate with a password (SCRAM); the Unix socket
in the server's directory trusts its local users. Every test takes a fresh database of its own
(`create_database`).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from core.settings import PostgresSettings, PostgresSslMode
from tests.support.process import free_port

SUPERUSER = "citywatch"
PASSWORD = "test-only-5b8e1c"
UNPRIVILEGED_USER = "nobody"


def find_pg_bin() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class PostgresServer:
    def __init__(self) -> None:
        bin_dir = find_pg_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed; run `make test` "
                               "(or: apt-get install -y postgresql)")
        self.bin_dir = bin_dir
        self.directory = Path(tempfile.mkdtemp(prefix="citywatch-postgres-"))
        self.data_dir = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        self.port = free_port()
        self._as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam(UNPRIVILEGED_USER)
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            self._as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]], cwd=self.directory, capture_output=True, text=True,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "TZ": "UTC"}, timeout=120, check=False,
            **self._as_user,
        )
        if result.returncode != 0:
            log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr[-2000:]}\n{log}")

    def start(self) -> PostgresServer:
        """Creates the cluster the first time; `stop()` then `start()` again is an outage and recovery."""
        if not self.data_dir.exists():
            password_file = self.directory / "password"
            password_file.write_text(PASSWORD + "\n")
            if self._as_user:
                os.chown(password_file, self._as_user["user"], self._as_user["group"])
            self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth-local=trust",
                      "--auth-host=scram-sha-256", f"--pwfile={password_file}", "-E", "UTF8", "--no-sync")
        # fsync off: a test server's data never needs to survive a crash of the machine.
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t", "60", "-o",
                  options, "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stops the server if it runs and deletes its directory."""
        if (self.data_dir / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def settings(self, database: str = "postgres", **changes: Any) -> PostgresSettings:
        return PostgresSettings(host="127.0.0.1", port=self.port, database=database, user=SUPERUSER,
                                password=PASSWORD, sslmode=PostgresSslMode.DISABLE, connect_timeout_s=10.0,
                                **changes)

    def create_database(self) -> PostgresSettings:
        """A new, empty database; settings that connect to it."""
        import psycopg

        name = f"test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, password=PASSWORD,
                             dbname="postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.settings(name)
