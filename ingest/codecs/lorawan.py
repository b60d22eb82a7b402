"""What The Things Stack and ChirpStack codecs share: a decoded payload -> one event of the device's kind.

The network server has already run the vendor's payload decoder; what arrives is that decoder's object
(`decoded_payload`, `object`). The registered device's `model` picks the vendor field map that turns
it into citywatch attributes (ingest/vendor_maps.py); a device without a map keeps the decoder's fields
as they are. Both what a map leaves out and a model without a map are reported (VendorMapNotices).
The event kind is the registered device's kind, so `bin` rules see a bin reading.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, Protocol

from core.ingest_config import VendorMap
from core.models import Event, Location
from core.settings import DeviceSettings
from ingest.codecs import common as c
from ingest.codecs.base import CodecError
from ingest.vendor_maps import VendorMapNotices, map_payload, vendor_map_named

# Kind of an event from a device the registry does not know: the normalizer dead-letters it as
# unknown_device (or keeps it as raw LoRaWAN data when unknown devices are accepted).
UNREGISTERED_KIND = "lorawan"
DEVICE_MISMATCH = "device_mismatch"
_HEX_EUI = re.compile(r"[0-9A-Fa-f]{16}")


class DeviceLookup(Protocol):
    def get(self, device_id: str) -> DeviceSettings | None: ...


class LorawanDecoded:
    """Turns a network server's decoded object into attributes with the device's vendor map."""

    def __init__(
        self,
        devices: DeviceLookup,
        vendor_maps: Mapping[str, VendorMap],
        notices: VendorMapNotices | None = None,
    ) -> None:
        self._devices = devices
        self._vendor_maps = vendor_maps
        self._notices = notices or VendorMapNotices()
        # model -> its map; the maps are fixed for a codec's life, the registry's models are few.
        self._maps_by_model: dict[str, tuple[str, VendorMap] | None] = {}

    def _vendor_map(self, model: str) -> tuple[str, VendorMap] | None:
        if model not in self._maps_by_model:
            self._maps_by_model[model] = vendor_map_named(model, self._vendor_maps)
        return self._maps_by_model[model]

    def event(
        self,
        *,
        source: str,
        event_id: str,
        device_id: str,
        event_time_ms: int,
        received_time_ms: int,
        decoded: Any,
        decoded_path: str,
        radio: dict[str, Any],
        location: Location | None,
    ) -> Event:
        decoded = c.obj(decoded, decoded_path)
        device = self._devices.get(device_id)
        model = None if device is None else device.model
        named = None if model is None else self._vendor_map(model)
        if named is None:
            if model is not None:
                self._notices.without_map(model)
            attributes = dict(decoded)
        else:
            mapped = map_payload(named[1], decoded, decoded_path)
            if mapped.unmapped and model is not None:
                self._notices.unmapped(model, named[0], mapped.unmapped)
            attributes = mapped.attributes
        attributes.update({key: value for key, value in radio.items() if value is not None})
        return Event(
            event_id=event_id,
            device_id=device_id,
            kind=UNREGISTERED_KIND if device is None else device.kind,
            event_time_ms=event_time_ms,
            ingest_time_ms=received_time_ms,
            attributes=attributes,
            location=location,
            source=source,
        )


def normal_eui(value: Any, path: str) -> str:
    """A DevEUI as 16 upper-case hex digits; accepts hex and the base64 that protobuf JSON uses for bytes."""
    if isinstance(value, str) and _HEX_EUI.fullmatch(value):
        return value.upper()
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == 8:
            return raw.hex().upper()
    raise CodecError(c.INVALID_FIELD, f"{path}: expected a DevEUI of 16 hex digits, got {c.preview(value)}")


def best_radio(rx: list[Any], path: str, rssi_key: str, snr_key: str) -> dict[str, Any]:
    """Strongest gateway's RSSI and SNR, and how many gateways heard the uplink (device health)."""
    best_rssi: float | None = None
    best_snr: float | None = None
    for index, item in enumerate(rx):
        gateway = c.obj(item, c.join(path, index))
        rssi = c.number(gateway, rssi_key, c.join(path, index), required=False, low=-200, high=50)
        snr = c.number(gateway, snr_key, c.join(path, index), required=False, low=-50, high=50)
        if rssi is not None and (best_rssi is None or rssi > best_rssi):
            best_rssi, best_snr = rssi, snr
    return {"rssi_dbm": best_rssi, "snr_db": best_snr, "gateways": len(rx)}


class LorawanCodec:
    """What the LoRaWAN network-server codecs share: the decoded-payload mapping and how a device id is
    chosen (the network server's device name, or its DevEUI, with an optional prefix)."""

    def __init__(
        self,
        devices: DeviceLookup,
        vendor_maps: Mapping[str, VendorMap],
        *,
        device_id_by: str = "name",
        device_id_prefix: str = "",
        notices: VendorMapNotices | None = None,
    ) -> None:
        self._decoded = LorawanDecoded(devices, vendor_maps, notices)
        self._devices = devices
        self._by_eui = device_id_by == "eui"
        self._prefix = device_id_prefix


def is_zero_time(value: Any) -> bool:
    """Protobuf's zero timestamp, which network servers send for a time they do not have (e.g. the
    network-server time of an uplink simulated in the console): not a time, a missing one."""
    return isinstance(value, str) and value.startswith("0001-01-01T00:00:00")
