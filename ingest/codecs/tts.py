"""The Things Stack (TTN / TTS v3) uplinks on `v3/{application id}@{tenant id}/devices/{device id}/up`.

Fields read: `end_device_ids.device_id` (and `dev_eui`), `received_at`, `uplink_message.f_port`,
`f_cnt`, `session_key_id`, `decoded_payload` (the output of the payload formatter configured in TTS),
`rx_metadata` (per gateway: rssi, snr, time, location), `locations` (user-set or solved position), and
`correlation_ids`. Unknown keys are ignored: TTS adds fields between releases.

Protobuf JSON leaves out zero values, so `f_cnt` is absent on a session's first uplink. An uplink
without `f_port` is a MAC-only frame (port 0) with no application data and is rejected.
Event time is `uplink_message.received_at` (the network server's clock, always set); a gateway's GPS
`time` in rx_metadata is used only when that is missing. The event id is the application server's
uplink correlation id (`as:up:...`), unique per uplink, else derived from the session and frame counter.
"""

from __future__ import annotations

from typing import Any

from core.models import Event, stable_id
from ingest.codecs import common as c
from ingest.codecs.base import CodecError
from ingest.codecs.lorawan import DEVICE_MISMATCH, LorawanCodec, best_radio, normal_eui


class TtsCodec(LorawanCodec):
    name = "tts"

    def decode(self, topic: str, payload: bytes, received_time_ms: int) -> list[Event]:
        message = c.obj(c.parse_json(payload), "")
        ids = c.obj(c.field(message, "end_device_ids", ""), "end_device_ids")
        name = c.text(ids, "device_id", "end_device_ids", max_len=36)
        assert name is not None
        topic_device = _topic_device(topic)
        if topic_device is not None and topic_device != name:
            raise CodecError(
                DEVICE_MISMATCH,
                f"end_device_ids.device_id: {name!r} differs from the device {topic_device!r} in the topic",
            )
        if self._by_eui:
            device_id = normal_eui(c.field(ids, "dev_eui", "end_device_ids"), "end_device_ids.dev_eui")
        else:
            device_id = name
        uplink = c.obj(c.field(message, "uplink_message", ""), "uplink_message")
        f_port = c.integer(uplink, "f_port", "uplink_message", required=False, low=1, high=255)
        if f_port is None:
            raise CodecError(
                c.UNSUPPORTED,
                "uplink_message.f_port: absent, so this is a MAC-only frame "
                "(port 0) without application data",
            )
        f_cnt = c.integer(uplink, "f_cnt", "uplink_message", required=False, low=0, high=2**32 - 1) or 0
        decoded = c.field(uplink, "decoded_payload", "uplink_message")
        rx = c.array(uplink, "rx_metadata", "uplink_message", required=False) or []
        event_time_ms = c.plausible(_time_ms(message, uplink, rx), "received_at", received_time_ms)
        app = c.obj(ids.get("application_ids") or {}, "end_device_ids.application_ids").get("application_id")
        event_id = _uplink_correlation_id(message) or stable_id(
            "tts", app, name, uplink.get("session_key_id"), f_cnt, event_time_ms
        )
        locations = uplink.get("locations")
        location_candidates: list[tuple[dict[str, Any] | None, str]] = []
        if isinstance(locations, dict):
            # `user` is the position set in the console; solved positions (frm-payload, gps) follow.
            for key in ("user", *sorted(k for k in locations if k != "user")):
                location_candidates.append((locations.get(key), f"uplink_message.locations.{key}"))
        radio = {
            "f_port": f_port,
            "f_cnt": f_cnt,
            **best_radio(rx, "uplink_message.rx_metadata", "rssi", "snr"),
        }
        return [
            self._decoded.event(
                source=self.name,
                event_id=event_id,
                device_id=self._prefix + device_id,
                event_time_ms=event_time_ms,
                received_time_ms=received_time_ms,
                decoded=decoded,
                decoded_path="uplink_message.decoded_payload",
                radio=radio,
                location=c.first_location(location_candidates),
            )
        ]


def _topic_device(topic: str) -> str | None:
    levels = topic.split("/")
    if len(levels) >= 4 and levels[0] == "v3" and levels[2] == "devices":
        return levels[3]
    return None


def _time_ms(message: dict[str, Any], uplink: dict[str, Any], rx: list[Any]) -> int:
    if uplink.get("received_at") is not None:
        return c.rfc3339_ms(uplink["received_at"], "uplink_message.received_at")
    if message.get("received_at") is not None:
        return c.rfc3339_ms(message["received_at"], "received_at")
    for index, gateway in enumerate(rx):
        if isinstance(gateway, dict) and gateway.get("time") is not None:
            return c.rfc3339_ms(gateway["time"], f"uplink_message.rx_metadata[{index}].time")
    raise CodecError(c.MISSING_FIELD, "received_at: required field is missing (and no rx_metadata time)")


def _uplink_correlation_id(message: dict[str, Any]) -> str | None:
    ids = message.get("correlation_ids")
    if isinstance(ids, list):
        for item in ids:
            if isinstance(item, str) and item.startswith("as:up:") and len(item) <= 128:
                return item
    return None
