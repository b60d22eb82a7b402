"""The test harness's readiness check must not take another process's server for the one it started."""

import subprocess
import sys

from tests.support.process import _listens_on, free_port
from tests.support.wait import wait_for

LISTENER = """
import socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
time.sleep(60)
"""


def test_a_listener_is_recognised_only_as_its_own_sessions():
    port = free_port()
    listener = subprocess.Popen([sys.executable, "-c", LISTENER, str(port)], start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        wait_for(lambda: _listens_on(listener.pid, port), 10, message="the listener to bind")
        assert not _listens_on(other.pid, port)  # what a restarted server sees when another took its port
        assert not _listens_on(listener.pid, free_port())
    finally:
        listener.kill()
        other.kill()
        listener.wait()
        other.wait()
