"""ChirpStack uplink events on `application/{application}/device/{devEui}/event/up`, v4 and v3.

The version is told by the body: v4 has `deviceInfo` and `deduplicationId`; v3 has `applicationID`
and `devEUI` at the top level (hex with the `json_v3` marshaler, base64 with `json`).

- v4: `deduplicationId` is the event id (one per uplink, however many gateways heard it); `time` the
  event time (else the first gateway's `nsTime` / `gwTime`); `object` the decoded payload; `rxInfo`
  per gateway `rssi`, `snr`, `location`.
- v3: `object`, or `objectJSON` (the decoded payload as a JSON string); time from `rxInfo[].time`, else
  `publishedAt`; `rxInfo[].loRaSNR`. v3 has no de-duplication id, so the id is derived from the
  DevEUI, frame counter and time.

A gateway without GPS gives no time, and a v3 application server without the gateway metadata option
sends no `rxInfo` at all: such an uplink is still a reading of now, so its time is the time citywatch
received it, marked on the event as `time_source: "received"`. What the uplink carries decides what it
is: a decoded payload makes it a data uplink even when `fPort` is left out; `fPort` 0, or no port and
no payload, is a MAC-only frame.
"""

from __future__ import annotations

from typing import Any

import msgspec

from core.models import Event, stable_id
from ingest.codecs import common as c
from ingest.codecs.base import CodecError
from ingest.codecs.lorawan import DEVICE_MISMATCH, LorawanCodec, best_radio, is_zero_time, normal_eui


class ChirpstackCodec(LorawanCodec):
    name = "chirpstack"

    def decode(self, topic: str, payload: bytes, received_time_ms: int) -> list[Event]:
        message = c.obj(c.parse_json(payload), "")
        if "deviceInfo" in message or "deduplicationId" in message:
            return [self._v4(message, topic, received_time_ms)]
        if "devEUI" in message or "applicationID" in message:
            return [self._v3(message, topic, received_time_ms)]
        raise CodecError(c.MISSING_FIELD, "deviceInfo: required field is missing (v4; or devEUI for v3)")

    def _v4(self, message: dict[str, Any], topic: str, received_time_ms: int) -> Event:
        info = c.obj(c.field(message, "deviceInfo", ""), "deviceInfo")
        eui = normal_eui(c.field(info, "devEui", "deviceInfo"), "deviceInfo.devEui")
        _check_topic(topic, eui, "deviceInfo.devEui")
        name = c.text(info, "deviceName", "deviceInfo", required=not self._by_eui)
        dedup_id = c.text(message, "deduplicationId", "", max_len=128)
        assert dedup_id is not None
        f_port = _port(message)
        f_cnt = c.integer(message, "fCnt", "", required=False, low=0, high=2**32 - 1) or 0
        rx = c.array(message, "rxInfo", "", required=False) or []
        if message.get("time") is not None and not is_zero_time(message["time"]):
            found: tuple[int, str] | None = (c.rfc3339_ms(message["time"], "time"), "time")
        else:
            found = _gateway_time(rx, ("nsTime", "gwTime"))
        radio = {"f_port": f_port, "f_cnt": f_cnt, **best_radio(rx, "rxInfo", "rssi", "snr")}
        event_time_ms = _event_time(found, received_time_ms, radio)
        return self._decoded.event(
            source=self.name,
            event_id=dedup_id,
            device_id=self._prefix + (eui if self._by_eui else str(name)),
            event_time_ms=event_time_ms,
            received_time_ms=received_time_ms,
            decoded=_v4_object(message),
            decoded_path="object",
            radio=radio,
            # rxInfo locations are the gateways' positions, not the device's: the registry's is used.
            location=None,
        )

    def _v3(self, message: dict[str, Any], topic: str, received_time_ms: int) -> Event:
        eui = normal_eui(c.field(message, "devEUI", ""), "devEUI")
        _check_topic(topic, eui, "devEUI")
        name = c.text(message, "deviceName", "", required=not self._by_eui)
        f_port = _port(message)
        f_cnt = c.integer(message, "fCnt", "", required=False, low=0, high=2**32 - 1) or 0
        rx = c.array(message, "rxInfo", "", required=False) or []
        found = _gateway_time(rx, ("time",))
        if found is None and message.get("publishedAt") is not None:
            found = c.rfc3339_ms(message["publishedAt"], "publishedAt"), "publishedAt"
        radio = {"f_port": f_port, "f_cnt": f_cnt, **best_radio(rx, "rxInfo", "rssi", "loRaSNR")}
        event_time_ms = _event_time(found, received_time_ms, radio)
        if message.get("object") is not None:
            decoded, decoded_path = message["object"], "object"
        else:
            raw = c.text(message, "objectJSON", "", max_len=1 << 20)
            assert raw is not None
            try:
                decoded = msgspec.json.decode(raw)
            except (msgspec.DecodeError, RecursionError):
                raise CodecError(c.INVALID_FIELD, "objectJSON: the string is not valid JSON") from None
            decoded_path = "objectJSON"
        return self._decoded.event(
            source=self.name,
            event_id=stable_id("chirpstack-v3", eui, f_cnt, event_time_ms),
            device_id=self._prefix + (eui if self._by_eui else str(name)),
            event_time_ms=event_time_ms,
            received_time_ms=received_time_ms,
            decoded=decoded,
            decoded_path=decoded_path,
            radio=radio,
            location=None,
        )


def _port(message: dict[str, Any]) -> int | None:
    """The frame port; None for a data uplink that leaves it out (its decoded payload says it is one)."""
    f_port = c.integer(message, "fPort", "", required=False, low=0, high=255)
    if f_port == 0:
        raise CodecError(c.UNSUPPORTED, "fPort: 0, so this is a MAC-only frame without application data")
    if f_port is None and all(message.get(key) is None for key in ("object", "objectJSON", "data")):
        raise CodecError(
            c.UNSUPPORTED,
            "fPort: absent, and no object, objectJSON or data, so this is a MAC-only frame without "
            "application data",
        )
    return f_port


def _v4_object(message: dict[str, Any]) -> Any:
    if message.get("object") is None:
        raise CodecError(
            c.MISSING_FIELD,
            "object: required field is missing (ChirpStack decodes `data` only when the device profile "
            "has a payload codec; citywatch reads the decoded object)",
        )
    return message["object"]


def _event_time(found: tuple[int, str] | None, received_time_ms: int, attributes: dict[str, Any]) -> int:
    """The uplink's own time; without one, the time citywatch received it, marked `time_source`."""
    if found is None:
        attributes["time_source"] = "received"
        return received_time_ms
    time_ms, where = found
    return c.plausible(time_ms, where, received_time_ms)


def _check_topic(topic: str, eui: str, path: str) -> None:
    levels = topic.split("/")
    in_topic = len(levels) >= 4 and levels[0] == "application" and levels[2] == "device"
    if in_topic and levels[3].upper() != eui:
        raise CodecError(DEVICE_MISMATCH, f"{path}: {eui} differs from the DevEUI {levels[3]!r} in the topic")


def _gateway_time(rx: list[Any], keys: tuple[str, ...]) -> tuple[int, str] | None:
    """The first gateway's time (and where it was found); None when no gateway had one."""
    for index, gateway in enumerate(rx):
        if not isinstance(gateway, dict):
            continue
        for key in keys:
            if gateway.get(key) is not None and not is_zero_time(gateway[key]):
                where = f"rxInfo[{index}].{key}"
                return c.rfc3339_ms(gateway[key], where), where
    return None
