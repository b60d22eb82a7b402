"""The codec interface: one payload format in, canonical events out, or a CodecError saying why not."""

from __future__ import annotations

from typing import Protocol

from core.models import Event

# How much of a payload a log line shows: enough to recognise the message, never a whole batch.
PREVIEW_BYTES = 200


class CodecError(Exception):
    """The payload breaks the format; the message is dead-lettered with `reason`.

    `reason` is a short machine token (used as a metric label and in the dead-letter store), `detail` a
    sentence for a person that names the offending field, e.g. "[3].location.lat: expected ...".
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        # str() so an enum member passed as the reason is stored (and encoded) as a plain string.
        self.reason = str(reason)
        self.detail = detail


class Codec(Protocol):
    """Turns one MQTT message into events. Nothing but CodecError may escape `decode`."""

    name: str

    def decode(self, topic: str, payload: bytes, received_time_ms: int) -> list[Event]:
        """All events of the message, or CodecError for anything the format forbids."""
        ...


def payload_preview(payload: bytes, limit: int = PREVIEW_BYTES) -> str:
    """A short, printable rendering of a payload for log lines (bytes repr, truncated, with its size)."""
    if len(payload) <= limit:
        return repr(payload)
    return f"{payload[:limit]!r}... ({len(payload)} bytes)"
