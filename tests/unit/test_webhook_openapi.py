"""The push channels are described in the OpenAPI document: the change message and the webhook delivery
with its headers, the WebSocket frames, and the HTTP refusals of the streams."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from api.app import create_app
from api.services import ApiServices
from core.metrics import Metrics
from store.sqlite_store import SqliteStore


def openapi(tmp_path: Any) -> dict[str, Any]:
    store = SqliteStore.in_directory(tmp_path)
    try:
        app: FastAPI = create_app(ApiServices(store=store, metrics=Metrics()))
        return app.openapi()
    finally:
        store.close()


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    found: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema
    return found


def test_the_webhook_delivery_is_documented_with_its_message_and_headers(tmp_path) -> None:
    document = openapi(tmp_path)
    delivery = document["webhooks"]["violation-change"]["post"]
    headers = {p["name"].lower() for p in delivery["parameters"] if p["in"] == "header"}
    assert headers == {"x-citywatch-signature", "idempotency-key", "x-citywatch-event",
                       "x-citywatch-delivery"}
    message = resolve(document, delivery["requestBody"]["content"]["application/json"]["schema"])
    assert set(message["required"]) == {"id", "change", "idempotency_key", "published_time_ms", "violation"}
    assert message["properties"]["change"]["enum"] == ["opened", "cleared"]
    violation = resolve(document, message["properties"]["violation"])
    assert "violation_id" in violation["properties"]


def test_the_case_sla_event_delivery_is_documented(tmp_path) -> None:
    document = openapi(tmp_path)
    delivery = document["webhooks"]["case-sla-event"]["post"]
    message = resolve(document, delivery["requestBody"]["content"]["application/json"]["schema"])
    assert message["properties"]["change"]["enum"] == ["case_sla_warning", "case_sla_breach"]
    case = resolve(document, message["properties"]["case"])
    assert {"case_id", "deadline_ms", "due_ms", "escalated_to"} <= set(case["properties"])
    event = next(p for p in delivery["parameters"] if p["name"].lower() == "x-citywatch-event")
    assert event["schema"]["enum"] == ["case.case_sla_warning", "case.case_sla_breach"]


def test_the_websocket_frames_and_the_stream_refusals_are_documented(tmp_path) -> None:
    document = openapi(tmp_path)
    frames = document["webhooks"]["websocket-violations-frame"]["post"]
    assert "GET /v1/ws/violations" in frames["description"]
    schema = frames["requestBody"]["content"]["application/json"]["schema"]
    kinds = {resolve(document, option)["properties"]["type"]["const"] for option in schema["oneOf"]}
    assert kinds == {"violation", "case", "error"}
    error = resolve(document, {"$ref": "#/components/schemas/StreamErrorFrame"})
    assert set(error["properties"]["error"]["enum"]) == {"too_slow", "cursor_expired", "key_revoked",
                                                         "key_lacks_scope"}
    stream = document["paths"]["/v1/stream/violations"]["get"]["responses"]
    assert {"400", "410", "422"} <= set(stream)
    assert "cursor_expired" in stream["410"]["description"]
