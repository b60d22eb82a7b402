"""Helper processes of a citywatch process (the case intake's, the webhook sender's): started the same
way, logging as their parent does, and ready only once they say so.

Spawned, not forked: the parent runs threads (and holds locks) that a fork would copy half-way. The child
gets one end of a pipe and sends READY on it once it can work (its store opened, its client made), so that
a child that cannot start is an error at start, not a failure at its first piece of work.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from core.log_format import LogFormat, configure_logging, json_logs_on

READY = b"ready"
# How long a new child may take to import and set up.
READY_S = 60.0

ChildLogs = tuple[str, LogFormat]


def spawn_child(target: Callable[..., None], args: tuple[Any, ...], *, name: str, what: str,
                error: type[Exception]) -> tuple[Connection, BaseProcess]:
    """Start `target(conn, *args, logs)` in a child process called `name` and wait until it is ready;
    `error` ("the {what} did not start within 60 s" / "exited at start (exit code N)") when it is not.
    `logs` is this process's log level and format, for `start_child`."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    logs: ChildLogs = (logging.getLevelName(logging.getLogger().getEffectiveLevel()),
                       "json" if json_logs_on() else "text")
    child = context.Process(target=target, args=(theirs, *args, logs), name=name, daemon=True)
    child.start()
    theirs.close()
    try:
        if not ours.poll(READY_S) or ours.recv_bytes() != READY:
            raise error(f"the {what} did not start within {READY_S:.0f} s")
    except (EOFError, OSError):
        child.join(READY_S)
        raise error(f"the {what} exited at start (exit code {child.exitcode}); its error is in the log "
                    f"above") from None
    return ours, child


def start_child(logs: ChildLogs) -> None:
    """First thing in a child: its log lines as the parent writes them; Ctrl-C, which reaches the whole
    process group, left to the parent, which stops the child when it has finished with it (or the child
    sees the pipe close when the parent is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(*logs)
