"""A Mosquitto of one test's own, with configuration lines the shared broker does not have."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ingest.embedded_broker import find_mosquitto, free_port, wait_for_port


@contextmanager
def own_mosquitto(directory: Path, extra_config: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Its URL and process (for a test that pauses it); `extra_config`: mosquitto.conf lines."""
    binary = find_mosquitto()
    if binary is None:
        pytest.fail("mosquitto is not installed; run `make test`, which installs it", pytrace=False)
    port = free_port()
    config = directory / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra_config}")
    process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        assert wait_for_port("127.0.0.1", port, 10, alive=lambda: process.poll() is None)
        yield f"mqtt://127.0.0.1:{port}", process
    finally:
        process.terminate()
        process.wait(10)
