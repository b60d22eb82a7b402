"""A local MQTT broker for when none is configured: Mosquitto when installed, else amqtt in-process.

Mosquitto runs as a child process with a generated config in a temporary directory; amqtt runs in a
dedicated thread with its own asyncio event loop so it never shares a loop with anything else.
Either way `start()` returns only once the port accepts TCP connections.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from core.settings import EmbeddedBrokerKind

log = logging.getLogger(__name__)

# /usr/sbin is often not on a normal user's PATH, and Debian installs the broker there.
MOSQUITTO_FALLBACK_PATHS = (Path("/usr/sbin/mosquitto"), Path("/usr/local/sbin/mosquitto"))
# In the state directory while our Mosquitto runs: its pid, its configuration file and the pid of the
# process that started it, one per line.
RUNNING_FILE = "embedded-mosquitto.pid"
# Per-client queue while a subscriber is slow or away (Mosquitto's default of 1000 drops data in a
# burst): at ~200 bytes per reading this bounds the broker at ~20 MB per client.
MOSQUITTO_MAX_QUEUED_MESSAGES = 100_000
_STOP_TIMEOUT_S = 5.0
_LOG_TAIL_BYTES = 2000


class BrokerStartError(RuntimeError):
    """The embedded broker did not come up; the message says why (with the broker's log when known)."""


class PortInUse(BrokerStartError):
    """Something else already listens on the port the embedded broker should use."""


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary, also looking in the sbin directories PATH often lacks."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for path in MOSQUITTO_FALLBACK_PATHS:
        if path.is_file():
            return str(path)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (another process could take it before the broker binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def ensure_port_free(host: str, port: int) -> None:
    """Raise BrokerStartError when something already listens on the port.

    Checked before starting, because the readiness probe (a TCP connect) cannot tell our broker from
    another process on the same port, e.g. a system Mosquitto on 1883. SO_REUSEADDR, as brokers use
    it, so that connections in TIME_WAIT from a previous run do not count as "in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortInUse(
                f"cannot start the embedded broker on {host}:{port}: {exc.strerror} "
                "(is another broker already running there?)"
            ) from exc


def wait_for_port(
    host: str, port: int, timeout_s: float, alive: Callable[[], bool] | None = None
) -> bool:
    """Poll a TCP connect until it succeeds; False on timeout or once `alive()` returns False."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


@dataclass(frozen=True)
class LeftBehind:
    """A Mosquitto that a killed run started and could not stop: its pid and configuration file."""

    pid: int
    config: Path


def find_left_behind(running_file: Path) -> LeftBehind | None:
    """The Mosquitto a previous run recorded in `running_file`, if it still runs without that run.

    A `citywatch up` killed with SIGKILL (or by the OOM killer) cannot stop its broker, which then keeps
    the port and the messages it queued for ingest's session. Only the process recorded with its own
    configuration file counts (the command line is checked, so a pid reused by anything else is left
    alone), and only once the run that recorded it is gone (a run still alive on the same data directory
    keeps its broker; a pid of that run reused by another process counts as alive: then nothing is
    taken). Never fatal: what cannot be read is nothing left behind.
    """
    try:
        pid_text, config, owner_text = running_file.read_text().splitlines()[:3]
        pid, owner = int(pid_text), int(owner_text)
    except (OSError, ValueError):
        return None  # nothing recorded (a clean stop removes the file), or not ours to read
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        command, parent = [], None  # gone
    if config.encode() not in command or not any(part.endswith(b"mosquitto") for part in command):
        running_file.unlink(missing_ok=True)
        return None
    if parent == owner or Path(f"/proc/{owner}").exists():
        log.warning("the embedded Mosquitto recorded in %s (pid %d) still belongs to a running citywatch "
                    "(pid %d): is another `citywatch up` using this data directory?", running_file, pid,
                    owner)
        return None
    return LeftBehind(pid, Path(config))


def stop_left_behind(left: LeftBehind) -> None:
    """SIGTERM, then SIGKILL after _STOP_TIMEOUT_S; its temporary directory goes with it."""
    try:
        os.kill(left.pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while Path(f"/proc/{left.pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path(f"/proc/{left.pid}").exists():
            os.kill(left.pid, signal.SIGKILL)
    except OSError as exc:  # gone meanwhile, or not ours to signal
        log.warning("could not stop the embedded Mosquitto left behind (pid %d): %s", left.pid, exc)
    shutil.rmtree(left.config.parent, ignore_errors=True)


class EmbeddedBroker:
    """Start and stop a local broker. `kind_used` tells which one actually runs.

    `password_file` (mosquitto only, in `mosquitto_passwd` format) turns anonymous access off.
    """

    def __init__(
        self,
        kind: EmbeddedBrokerKind | str = EmbeddedBrokerKind.AUTO,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        password_file: Path | None = None,
        startup_timeout_s: float = 10.0,
        state_dir: Path | None = None,
    ) -> None:
        self.kind = EmbeddedBrokerKind(kind)
        self.host = host
        self.port = port
        self.password_file = password_file
        self.startup_timeout_s = startup_timeout_s
        # Where a running Mosquitto is recorded (RUNNING_FILE), so that the next start can take over or
        # stop one that a killed run left behind.
        self.state_dir = state_dir
        self.kind_used: EmbeddedBrokerKind | None = None
        self._runner: _MosquittoRunner | _AmqttRunner | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> str:
        """Start the broker and return its url once it accepts connections."""
        if self._runner is not None:
            raise RuntimeError("embedded broker already started")
        kind = self._resolve_kind()
        if self.password_file is not None and kind is not EmbeddedBrokerKind.MOSQUITTO:
            raise ValueError("password_file is only supported by the mosquitto embedded broker")
        left = find_left_behind(self.state_dir / RUNNING_FILE) if self.state_dir is not None else None
        runner: _MosquittoRunner | _AmqttRunner | None = None if left is None else self._take_over(kind, left)
        if runner is None:
            runner = self._new_runner(kind)
            runner.start(self.startup_timeout_s)
        self._runner = runner
        self.kind_used = kind
        if self.state_dir is not None and isinstance(runner, _MosquittoRunner):
            runner.record(self.state_dir / RUNNING_FILE)
        log.info("embedded %s broker listening on %s", kind.value, self.url)
        return self.url

    def _new_runner(self, kind: EmbeddedBrokerKind) -> _MosquittoRunner | _AmqttRunner:
        if self.port == 0:
            self.port = free_port(self.host)
        else:
            ensure_port_free(self.host, self.port)
        if kind is not EmbeddedBrokerKind.MOSQUITTO:
            return _AmqttRunner(self.host, self.port)
        binary = find_mosquitto()
        if binary is None:
            raise BrokerStartError("mosquitto is not installed (apt-get install mosquitto)")
        return _MosquittoRunner(binary, self.host, self.port, self.password_file)

    def _take_over(self, kind: EmbeddedBrokerKind, left: LeftBehind) -> _MosquittoRunner | None:
        """Use the broker a killed run left behind when it is the one this start would make (same port,
        same configuration): it holds what devices published since, queued for ingest's session, which
        the new ingest then receives. Otherwise stop it and start afresh."""
        binary = find_mosquitto()
        if kind is EmbeddedBrokerKind.MOSQUITTO and binary is not None and self.port != 0:
            runner = _MosquittoRunner(binary, self.host, self.port, self.password_file)
            if runner.take_over(left, self.startup_timeout_s):
                log.warning("a previous run was killed before it could stop its embedded Mosquitto (pid %d) "
                            "on %s: taking it over, with what it queued for ingest since", left.pid, self.url)
                return runner
        log.warning("stopping the embedded Mosquitto (pid %d) that a killed run left behind: this start "
                    "needs another one", left.pid)
        stop_left_behind(left)
        return None

    def stop(self) -> None:
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        runner.stop()
        log.info("embedded %s broker stopped", self.kind_used)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _resolve_kind(self) -> EmbeddedBrokerKind:
        if self.kind is not EmbeddedBrokerKind.AUTO:
            return self.kind
        return EmbeddedBrokerKind.MOSQUITTO if find_mosquitto() else EmbeddedBrokerKind.AMQTT


class _MosquittoRunner:
    def __init__(self, binary: str, host: str, port: int, password_file: Path | None) -> None:
        self._binary = binary
        self._host = host
        self._port = port
        self._password_file = password_file
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._log_file: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._running_file: Path | None = None
        # A broker a killed run left behind, taken over (take_over): no Popen of ours to wait for.
        self._taken_over: LeftBehind | None = None

    @property
    def _workdir_path(self) -> Path | None:
        if self._taken_over is not None:
            return self._taken_over.config.parent
        return None if self._workdir is None else Path(self._workdir.name)

    def take_over(self, left: LeftBehind, timeout_s: float) -> bool:
        """Whether `left` is the broker this runner would start (the same configuration, answering on
        the port); if so it is this runner's from now on."""
        try:
            same = left.config.read_text(encoding="utf-8") == self._config()
        except OSError:
            same = False
        alive = lambda: Path(f"/proc/{left.pid}").exists()  # noqa: E731
        if not same or not wait_for_port(self._host, self._port, timeout_s, alive=alive):
            return False
        self._taken_over = left
        return True

    def start(self, timeout_s: float) -> None:
        self._workdir = tempfile.TemporaryDirectory(prefix="citywatch-mosquitto-")
        workdir = Path(self._workdir.name)
        config = workdir / "mosquitto.conf"
        config.write_text(self._config(), encoding="utf-8")
        # The broker logs to stderr, which we point at a file: the parent opens it, so the broker
        # needs no write permission of its own, and a failed start can quote it.
        self._log_file = (workdir / "mosquitto.log").open("wb")
        self._process = subprocess.Popen(
            [self._binary, "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        process = self._process
        ready = wait_for_port(self._host, self._port, timeout_s, alive=lambda: process.poll() is None)
        # Alive after the port answered: otherwise whatever answered was not this broker.
        if not ready or process.poll() is not None:
            reason = (
                f"exited with code {process.returncode}" if process.poll() is not None
                else f"did not accept connections within {timeout_s:.0f} s"
            )
            log_tail = self._log_tail()
            self.stop()
            raise BrokerStartError(f"mosquitto on {self._host}:{self._port} {reason}; its log:\n{log_tail}")

    def _config(self) -> str:
        lines = [
            # Run as the user who started us: run as root, mosquitto would otherwise switch to the
            # `mosquitto` user, which cannot read the password file in our private temp directory.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            f"listener {self._port} {self._host}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"max_queued_messages {MOSQUITTO_MAX_QUEUED_MESSAGES}",
        ]
        if self._password_file is None:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", f"password_file {self._password_file}"]
        return "\n".join(lines) + "\n"

    def _log_tail(self) -> str:
        workdir = self._workdir_path
        if workdir is None:
            return ""
        try:
            data = (workdir / "mosquitto.log").read_bytes()
        except OSError:
            return ""
        return data[-_LOG_TAIL_BYTES:].decode("utf-8", "replace")

    def record(self, running_file: Path) -> None:
        """Write this broker's pid and configuration file where the next start looks (find_left_behind)."""
        workdir = self._workdir_path
        pid = self._taken_over.pid if self._taken_over is not None else (
            self._process.pid if self._process is not None else None)
        assert workdir is not None and pid is not None
        try:
            running_file.parent.mkdir(parents=True, exist_ok=True)
            running_file.write_text(f"{pid}\n{workdir / 'mosquitto.conf'}\n{os.getpid()}\n")
        except OSError as exc:
            log.warning("could not record the embedded Mosquitto in %s: %s", running_file, exc)
            return
        self._running_file = running_file

    def stop(self) -> None:
        if self._running_file is not None:
            self._running_file.unlink(missing_ok=True)
            self._running_file = None
        taken_over, self._taken_over = self._taken_over, None
        if taken_over is not None:
            stop_left_behind(taken_over)
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("mosquitto did not stop on SIGTERM within %.0f s; killing it", _STOP_TIMEOUT_S)
                process.kill()
                process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


class _AmqttRunner:
    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self._host}:{self._port}"}},
            # Only authentication: amqtt's default plugin set adds $SYS publishing and packet
            # logging, which cost CPU on every message and which nobody reads here.
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

    def start(self, timeout_s: float) -> None:
        # Imported here: amqtt is only loaded (and only warns) when it is the broker we run.
        from amqtt.broker import Broker

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), name="amqtt-broker", daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()

        async def start_broker() -> Any:
            # Built inside the loop: amqtt binds to the running loop when it is constructed.
            broker = Broker(self._config())
            await broker.start()
            return broker

        # No TCP probe afterwards: once start() returns, amqtt's listening socket is bound and accepting
        # (and amqtt logs an error for a connection that sends no MQTT packet).
        try:
            self._broker = asyncio.run_coroutine_threadsafe(start_broker(), loop).result(timeout_s)
        except Exception as exc:
            self.stop()
            raise BrokerStartError(f"amqtt on {self._host}:{self._port} failed to start: {exc}") from exc

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            # Stopped: let what the broker left behind (client handlers, timers) finish cancelling, so
            # no task is destroyed pending and no transport is left unclosed.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def stop(self) -> None:
        loop, thread, broker = self._loop, self._thread, self._broker
        self._loop = self._thread = self._broker = None
        if loop is None or thread is None:
            return
        if broker is not None:
            try:
                asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(_STOP_TIMEOUT_S)
            except Exception:
                log.exception("amqtt broker did not shut down cleanly")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_STOP_TIMEOUT_S)
        if thread.is_alive():
            log.warning("amqtt broker thread did not end within %.0f s", _STOP_TIMEOUT_S)
