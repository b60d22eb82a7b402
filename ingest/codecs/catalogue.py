"""Builds the codec of each ingest route: the one place that knows every payload format.

A codec is built per route, not per format, because routes carry options (a Frigate server's URL, how
LoRaWAN devices are named, a device id prefix) and two routes may use one format differently.
"""

from __future__ import annotations

from collections.abc import Mapping

from core.ingest_config import VendorMap
from core.settings import TopicRoute
from ingest.codecs.base import Codec
from ingest.codecs.chirpstack import ChirpstackCodec
from ingest.codecs.frigate import FrigateCodec
from ingest.codecs.lorawan import DeviceLookup
from ingest.codecs.native import NativeCodec
from ingest.codecs.native_kinds import CameraViolationCodec, DetectorCodec, SignalCodec
from ingest.codecs.senml import SenmlCodec
from ingest.codecs.tts import TtsCodec
from ingest.vendor_maps import VendorMapNotices

CODEC_NAMES = ("native", "frigate", "tts", "chirpstack", "senml", "signal", "detector", "camera_violation")


def build_codec(
    route: TopicRoute,
    devices: DeviceLookup,
    vendor_maps: Mapping[str, VendorMap],
    notices: VendorMapNotices | None = None,
) -> Codec:
    """The codec for one route; ValueError for a codec name this build does not know.

    `notices` hears what vendor maps leave out (one per running ingest, so its metrics are that one's).
    """
    match route.codec:
        case "native":
            return NativeCodec()
        case "frigate":
            return FrigateCodec(
                media_base_url=route.media_base_url,
                speed_unit=route.speed_unit,
                device_id_prefix=route.device_id_prefix,
            )
        case "tts":
            return TtsCodec(
                devices,
                vendor_maps,
                device_id_by=route.lorawan_device_id,
                device_id_prefix=route.device_id_prefix,
                notices=notices,
            )
        case "chirpstack":
            return ChirpstackCodec(
                devices,
                vendor_maps,
                device_id_by=route.lorawan_device_id,
                device_id_prefix=route.device_id_prefix,
                notices=notices,
            )
        case "senml":
            return SenmlCodec(devices, device_id_prefix=route.device_id_prefix)
        case "signal":
            return SignalCodec()
        case "detector":
            return DetectorCodec()
        case "camera_violation":
            return CameraViolationCodec()
    raise ValueError(f"route {route.pattern!r}: unknown codec {route.codec!r}")
