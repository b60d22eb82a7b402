"""The Things Stack (TTN / TTS v3) uplinks on `v3/{application id}@{tenant id}/devices/{device id}/up`.

Fields read: `end_device_ids.device_id` (and `dev_eui`), `received_at`, `uplink_message.f_port`,
`f_cnt`, `session_key_id`, `decoded_payload` (the output of the payload formatter configured in TTS),
`rx_metadata` (per gateway: rssi, snr, time, location), `locations` (user-set or solved position),
`correlation_ids` and `simulated`. Unknown keys are ignored: TTS adds fields between releases.

Protobuf JSON leaves out zero values, so `f_cnt` is absent on a session's first uplink, and a time
TTS does not have is the zero time `0001-01-01T00:00:00Z` (simulated uplinks carry it as
`uplink_message.received_at`). What the uplink carries decides what it is: with a `decoded_payload` or
`frm_payload` it is a data uplink even when `f_port` is left out (the TTS documentation's own example
does); with neither and no `f_port` it is a MAC-only frame (port 0) and is rejected.
Event time is `uplink_message.received_at` (the network server's clock), else the application server's
`received_at`, else a gateway's GPS `time`. The event id is the application server's uplink
correlation id (`as:up:...`), unique per uplink, else derived from the session and frame counter.

A device registered with a position is a fixed asset: with `device_position: registry` (the default)
its registered position wins over `uplink_message.locations` (whose `user` entry is whatever was typed
in the console), so its grid and district stay those of where it is installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.ingest_config import VendorMap
from core.models import Event, Location, stable_id
from ingest.codecs import common as c
from ingest.codecs.base import CodecError
from ingest.codecs.lorawan import (
    DEVICE_MISMATCH,
    DeviceLookup,
    LorawanCodec,
    best_radio,
    is_zero_time,
    normal_eui,
)
from ingest.vendor_maps import VendorMapNotices

SIMULATED_UPLINK = "simulated_uplink"


class TtsCodec(LorawanCodec):
    name = "tts"

    def __init__(
        self,
        devices: DeviceLookup,
        vendor_maps: Mapping[str, VendorMap],
        *,
        device_id_by: str = "name",
        device_id_prefix: str = "",
        simulated_uplinks: str = "mark",
        device_position: str = "registry",
        notices: VendorMapNotices | None = None,
    ) -> None:
        super().__init__(devices, vendor_maps, device_id_by=device_id_by, device_id_prefix=device_id_prefix,
                         notices=notices)
        self._simulated_uplinks = simulated_uplinks
        self._network_position_wins = device_position == "network"

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
        simulated = c.boolean(message, "simulated", "", required=False) is True
        if simulated and self._simulated_uplinks == "drop":
            raise CodecError(
                SIMULATED_UPLINK,
                "simulated: true, so the uplink was simulated in The Things Stack (console or API), "
                "not sent by the device; this route drops simulated uplinks (simulated_uplinks: drop)",
            )
        uplink = c.obj(c.field(message, "uplink_message", ""), "uplink_message")
        f_port = c.integer(uplink, "f_port", "uplink_message", required=False, low=1, high=255)
        if f_port is None and uplink.get("decoded_payload") is None and uplink.get("frm_payload") is None:
            raise CodecError(
                c.UNSUPPORTED,
                "uplink_message.f_port: absent, and no frm_payload or decoded_payload, so this is a "
                "MAC-only frame (port 0) without application data",
            )
        f_cnt = c.integer(uplink, "f_cnt", "uplink_message", required=False, low=0, high=2**32 - 1) or 0
        decoded = c.field(uplink, "decoded_payload", "uplink_message")
        rx = c.array(uplink, "rx_metadata", "uplink_message", required=False) or []
        event_time_ms = c.plausible(_time_ms(message, uplink, rx), "received_at", received_time_ms)
        app = c.obj(ids.get("application_ids") or {}, "end_device_ids.application_ids").get("application_id")
        event_id = _uplink_correlation_id(message) or stable_id(
            "tts", app, name, uplink.get("session_key_id"), f_cnt, event_time_ms
        )
        network_location = self._network_location(uplink.get("locations"))
        extra = {
            "f_port": f_port,
            "f_cnt": f_cnt,
            **best_radio(rx, "uplink_message.rx_metadata", "rssi", "snr"),
        }
        if simulated and self._simulated_uplinks == "mark":
            extra["simulated"] = True
        device_id = self._prefix + device_id
        return [
            self._decoded.event(
                source=self.name,
                event_id=event_id,
                device_id=device_id,
                event_time_ms=event_time_ms,
                received_time_ms=received_time_ms,
                decoded=decoded,
                decoded_path="uplink_message.decoded_payload",
                radio=extra,
                location=None if self._registered_position(device_id) else network_location,
            )
        ]

    def _network_location(self, locations: Any) -> Location | None:
        """`user` is the position set in the console, the others are solved per uplink (`frm-payload`
        from the payload's GPS fix, `gps`, LoRa geolocation): a device placed by hand is where it was
        set, a moving one (device_position: network) where it was last measured."""
        if not isinstance(locations, dict):
            return None
        solved = sorted(key for key in locations if key != "user")
        order = [*solved, "user"] if self._network_position_wins else ["user", *solved]
        return c.first_location([(locations.get(key), f"uplink_message.locations.{key}") for key in order])

    def _registered_position(self, device_id: str) -> bool:
        """Whether the registry's position of this device wins over the network server's."""
        if self._network_position_wins:
            return False
        device = self._devices.get(device_id)
        return device is not None and device.lat is not None and device.lon is not None


def _topic_device(topic: str) -> str | None:
    levels = topic.split("/")
    if len(levels) >= 4 and levels[0] == "v3" and levels[2] == "devices":
        return levels[3]
    return None


def _time_ms(message: dict[str, Any], uplink: dict[str, Any], rx: list[Any]) -> int:
    for node, path in ((uplink, "uplink_message.received_at"), (message, "received_at")):
        value = node.get("received_at")
        if value is not None and not is_zero_time(value):
            return c.rfc3339_ms(value, path)
    for index, gateway in enumerate(rx):
        time = gateway.get("time") if isinstance(gateway, dict) else None
        if time is not None and not is_zero_time(time):
            return c.rfc3339_ms(time, f"uplink_message.rx_metadata[{index}].time")
    raise CodecError(c.MISSING_FIELD, "received_at: required field is missing (and no rx_metadata time)")


def _uplink_correlation_id(message: dict[str, Any]) -> str | None:
    ids = message.get("correlation_ids")
    if isinstance(ids, list):
        for item in ids:
            if isinstance(item, str) and item.startswith("as:up:") and len(item) <= 128:
                return item
    return None
