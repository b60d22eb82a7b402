"""Fixtures shared by the API tests of this folder."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.support.alerts import AlertApi


@pytest.fixture
def client(api: AlertApi) -> TestClient:
    """A client of the test's own `api` app (each module defines the `api` fixture it needs)."""
    return api.client()
