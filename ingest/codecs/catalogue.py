"""Builds the codec of each ingest route: the one place that knows every payload format.

A codec is built per route, not per format, because routes carry options (a Frigate server's URL, how
LoRaWAN devices are named, a device id prefix) and two routes may use one format differently.

The Frigate routes built for one ingest (one device registry) share one memory of the tracks they have
read: `frigate/events` and `frigate/tracked_object_update` are two routes, and an update is read with
the state of its track from the events route.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from weakref import WeakKeyDictionary

from core.ingest_config import VendorMap
from core.settings import TopicRoute
from ingest.codecs.base import Codec
from ingest.codecs.chirpstack import ChirpstackCodec
from ingest.codecs.frigate import FrigateCodec, FrigateTracks
from ingest.codecs.lorawan import DeviceLookup
from ingest.codecs.native import NativeCodec
from ingest.codecs.native_kinds import CameraViolationCodec, DetectorCodec, SignalCodec
from ingest.codecs.senml import SenmlCodec
from ingest.codecs.tts import TtsCodec
from ingest.vendor_maps import VendorMapNotices

CODEC_NAMES = ("native", "frigate", "tts", "chirpstack", "senml", "signal", "detector", "camera_violation")

_FRIGATE_TRACKS: WeakKeyDictionary[Any, FrigateTracks] = WeakKeyDictionary()


def _frigate_tracks(devices: DeviceLookup) -> FrigateTracks:
    """The track memory of the Frigate routes built with this registry (forgotten with it)."""
    try:
        return _FRIGATE_TRACKS.setdefault(devices, FrigateTracks())
    except TypeError:  # a lookup that cannot be weakly referenced: this route keeps its own memory
        return FrigateTracks()


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
                attributes=route.frigate_attributes,
                tracks=_frigate_tracks(devices),
            )
        case "tts":
            return TtsCodec(
                devices,
                vendor_maps,
                device_id_by=route.lorawan_device_id,
                device_id_prefix=route.device_id_prefix,
                simulated_uplinks=route.simulated_uplinks,
                device_position=route.device_position,
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
            return SenmlCodec(
                devices,
                device_id_prefix=route.device_id_prefix,
                names=route.senml_names,
                device_position=route.device_position,
            )
        case "signal":
            return SignalCodec()
        case "detector":
            return DetectorCodec()
        case "camera_violation":
            return CameraViolationCodec()
    raise ValueError(f"route {route.pattern!r}: unknown codec {route.codec!r}")
