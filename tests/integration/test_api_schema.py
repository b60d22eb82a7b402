"""The running API against its own OpenAPI document, with schemathesis generating the requests: no server
error, and no status, content type, header or body that contradicts what the document declares. Once
with an admin key (every route is reachable) and once without a key (every route refuses)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from api.access.keys import Scope
from core.settings import ApiSettings, AuthMode
from ingest.device_admin import DeviceManager
from ingest.registry import DeviceRegistry
from tests.support.alerts import AlertApi, alert_api, violation
from tests.support.events import reading
from tests.support.served_app import served

pytestmark = pytest.mark.integration

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance")
# Per operation; enough to reach every parameter and body field, small enough for CI (about a minute).
EXAMPLES_PER_OPERATION = 15


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertApi]:
    data_dir = tmp_path_factory.mktemp("schema")
    api = alert_api(data_dir, api=ApiSettings(
        auth=AuthMode.REQUIRED, rate_limit_per_s=100_000, rate_limit_burst=100_000,
        auth_failure_limit=100_000))
    # The api role's device registry, as `citywatch api` and `citywatch up` serve it at /v1/devices.
    api.services.devices = DeviceManager.open(data_dir, DeviceRegistry(), [])
    api.store.write_events([reading(f"bin-{n}", n, fill_pct=10 * n) for n in range(5)])
    api.store.write_violations([violation(n) for n in range(1, 6)])
    api.store.flush()
    yield api
    api.services.devices.close()
    api.close()


def schemathesis(base_url: str, report: Path, *headers: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "run", f"{base_url}/openapi.json",
        "--checks", ",".join(CHECKS), "--max-examples", str(EXAMPLES_PER_OPERATION),
        "--seed", "1", "--request-timeout", "10", "--report", "junit", "--report-junit-path", str(report),
        # An event stream never ends, so a generated request could only time out; the streams' refusals
        # are checked against the same documented problems in tests/integration/test_streams.py.
        "--exclude-path-regex", "^/v1/stream/",
        *[option for header in headers for option in ("--header", header)],
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=report.parent,
                          env={**os.environ, "NO_COLOR": "1"})


# The run grows with the number of operations (about 0.5-1 s each): the subprocess has its own bound.
@pytest.mark.timeout(600)
@pytest.mark.parametrize("with_key", [True, False], ids=["admin-key", "no-key"])
def test_every_response_matches_the_openapi_document(api: AlertApi, tmp_path: Path, with_key: bool) -> None:
    headers = [f"Authorization: Bearer {api.key(Scope.ADMIN)}"] if with_key else []
    report = tmp_path / "junit.xml"
    with served(api.app) as client:
        paths = client.get("/openapi.json").json()["paths"]
        operations = [(method.upper(), path) for path, item in paths.items() for method in item
                      if not path.startswith("/v1/stream/")]
        result = schemathesis(str(client.base_url), report, *headers)
    output = (result.stdout + result.stderr)[-8000:]
    cases = ElementTree.parse(report).getroot().iter("testcase")
    failed = {case.get("name"): [child.get("message") for child in case if child.tag in ("failure", "error")]
              for case in cases}
    assert {f"{method} {path}" for method, path in operations} <= failed.keys(), output  # all exercised
    assert {name: problems for name, problems in failed.items() if problems} == {}, output
    assert result.returncode == 0, output
