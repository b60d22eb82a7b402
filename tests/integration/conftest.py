"""Fixtures of the webhook tests: receivers and apps that a test starts and the fixture stops."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.alerts import AlertApi
from tests.support.servers import Receiver


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    """Webhook receivers the test starts (and appends here); stopped after it."""
    started: list[Receiver] = []
    yield started
    for receiver in started:
        receiver.stop()


@pytest.fixture
def apis() -> Iterator[list[AlertApi]]:
    """API apps the test builds (and appends here); closed after it."""
    started: list[AlertApi] = []
    yield started
    for api in started:
        api.close()
