"""JSON logs of a real `citywatch up`: one JSON object per line on standard error, the HTTP server's lines
included, each line written for a request carrying the request's id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.process import CitywatchProcess, bins, free_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


class FormatOptionProcess(CitywatchProcess):
    """`citywatch --log-format FORMAT up`."""

    def __init__(self, tmp_path: Path, config: dict[str, Any], log_format: str) -> None:
        super().__init__(tmp_path, config)
        self.log_format = log_format

    def arguments(self) -> list[str]:
        return ["--log-format", self.log_format, *super().arguments()]


def config(**extra: Any) -> dict[str, Any]:
    return {"devices": bins("bin-a"), "mqtt": {"embedded_broker": "amqtt", "embedded_port": free_port()},
            **extra}


def log_records(process: CitywatchProcess) -> tuple[list[dict[str, Any]], list[str]]:
    """(the JSON records, the other lines: what the command prints on standard output)."""
    records, others = [], []
    for line in process.log().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))  # a line that starts as JSON must be JSON entirely
        elif line.strip():
            others.append(line)
    return records, others


def request_with_id(process: CitywatchProcess, path: str, request_id: str) -> httpx.Response:
    response = httpx.get(process.base_url + path, headers={"X-Request-ID": request_id}, timeout=10)
    assert response.headers["X-Request-ID"] == request_id
    return response


def lines_of(process: CitywatchProcess, request_id: str) -> list[dict[str, Any]]:
    return [r for r in log_records(process)[0] if r.get("request_id") == request_id]


@pytest.mark.parametrize("how", ["option", "setting"])
def test_json_logs_carry_the_request_id_of_each_request(tmp_path: Path, how: str) -> None:
    if how == "option":
        process: CitywatchProcess = FormatOptionProcess(tmp_path, config(), "json")
    else:
        process = CitywatchProcess(tmp_path, config(logging={"format": "json"}))
    process.start()
    try:
        assert request_with_id(process, "/v1/violations", "trace-0001").status_code == 200
        assert request_with_id(process, "/v1/violations/nope", "trace-0002").status_code == 404
        [served] = wait_for(lambda: lines_of(process, "trace-0001"), message="the request's log line")
        [missing] = wait_for(lambda: lines_of(process, "trace-0002"), message="the 404's log line")
    finally:
        assert process.stop() == 0

    assert served["logger"] == "uvicorn.access" and served["level"] == "INFO"
    assert "GET /v1/violations HTTP/1.1" in served["message"] and served["message"].endswith("200")
    assert "/v1/violations/nope" in missing["message"] and missing["message"].endswith("404")
    assert served["time"].endswith("Z")
    records, others = log_records(process)
    # The server's start and stop went through the JSON handler too, without a request id.
    assert any(r["logger"] == "uvicorn.error" and "Application startup complete" in r["message"]
               and "request_id" not in r for r in records)
    assert all(line.startswith("citywatch:") for line in others), others


@pytest.mark.parametrize("how", ["default", "option over setting"])
def test_text_logs_are_the_default_and_the_option_wins_over_the_setting(tmp_path: Path, how: str) -> None:
    if how == "default":
        process = CitywatchProcess(tmp_path, config())
    else:
        process = FormatOptionProcess(tmp_path, config(logging={"format": "json"}), "text")
    process.start()
    try:
        request_with_id(process, "/healthz", "trace-text")
    finally:
        assert process.stop() == 0
    records, others = log_records(process)
    assert records == []
    assert any("Application startup complete" in line for line in others)
