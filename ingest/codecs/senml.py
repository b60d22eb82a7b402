"""SenML JSON packs (RFC 8428) -> one event per device and resolved time.

Resolution follows RFC 8428 section 4.6: base name, base time, base unit, base value and base sum carry
forward to later records; name = bn + n; time = bt + t, where a result below 2**28 s is relative to the
time the pack was received (negative: in the past); value = bv + v; sum = bs + s. A record that only
sets base fields (`{"bn": "urn:dev:ow:10e2073a01080063:"}`) carries no measurement.

Which device, which measurement (our choice, see docs/formats.md). A SenML name is one string naming a
sensor; RFC 8428 leaves its structure to the sender, so it is split in this order:
1. A record with both a base name and a name: the device is the base name without its trailing
   separator (`urn:dev:ow:10e2073a01080063:` + `voltage`), the measurement is the name.
2. Otherwise the resolved name is split: a registered device id that is the whole name, or its longest
   prefix ending before a `:` `/` or `_`, is the device and the rest the measurement; else a device URN
   (`urn:dev:<type>:<id>` of RFC 9039, `urn:uuid:`, `urn:gsma:imei:`) is the device and what follows
   its id the measurement; else a plain word (no `:` or `/`) is a measurement of the device named by the
   topic's last level; else a name with `/` splits at the last `/`; else the whole name is the device.
3. A record naming only its device measures what its unit says (RFC 8428 section 5.1.1: a 1-wire
   device's `Cel` value is its temperature): `Cel` -> temperature, `%RH` -> humidity, `%EL` -> battery,
   `V` -> voltage, ... (UNIT_MEASUREMENTS); a unit that names nothing gives `value`.
- Measurement names go through the name map (SHIPPED_NAMES, then the route's `senml_names`):
  `pm2_5` -> `pm25`, `temp` -> `temperature`, ... A mapped name may carry the unit of records that name
  none, and a record in a convertible unit is converted into it (mg/m3 -> ug/m3, ppb -> ppm).
- Records sharing a device and a resolved time become one event: a sensor sends temperature and
  humidity of one instant as one pack, and rules want them together. Records of one measurement at
  different times are as many events, in time order.
- The attribute name is the measurement in snake_case with the unit's suffix (`temperature` + `Cel` ->
  `temperature_c`, `pm25` + `ug/m3` -> `pm25_ugm3`); units with a scale are converted (`K` -> C,
  `min` -> s, `Pa` -> hPa, `/` ratio -> percent). `lat` / `lon` (units or measurements) become the
  event's location, unless the device is registered with a position and the route's `device_position`
  is `registry` (the default): a fixed asset stays where it is registered, whatever a network's
  geolocation (often hundreds of metres off) adds to the pack. A unit we do not map keeps the
  measurement name and is listed in the `units` attribute.
- String, boolean and data values (`vs`, `vb`, `vd`) are kept as they are; a sum becomes `{name}_sum`.

Rejected: anything not a non-empty array of objects, unknown must-understand fields (ending in `_`),
`bver` above 10, a measurement record with no value or with two, names with characters RFC 8428
forbids, two values for one measurement at one time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from core.ingest_config import SenmlName
from core.models import Event, Location, stable_id
from ingest.codecs import common as c
from ingest.codecs.base import CodecError
from ingest.codecs.lorawan import DeviceLookup

MAX_RECORDS = 1000
RELATIVE_TIME_LIMIT_S = 2**28
SUPPORTED_VERSION = 10
UNREGISTERED_KIND = "senml"
_NAME = re.compile(r"[A-Za-z0-9][-:./_A-Za-z0-9]*")
_NOT_WORD = re.compile(r"[^a-z0-9]+")
_KNOWN_FIELDS = frozenset(
    {"bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"}
)
# Fields that make a record a measurement; a record with none of them only sets base fields.
_RECORD_FIELDS = frozenset({"n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"})
# Trailing separators of a base name that ends where the record names begin.
_BASE_NAME_END = ":/._-"
# Device URNs whose identifier ends at the next separator: RFC 9039 (urn:dev, whose `_` starts a
# component such as urn:dev:ow:264437f5000000ed_humidity), RFC 4122 (uuid), RFC 7254 (IMEI).
_DEVICE_URN = re.compile(r"(urn:(?:dev:[A-Za-z0-9]+|uuid|gsma:imei):[^:/_]+)(?:[:/_](.*))?", re.IGNORECASE)
_LOCATION = ("lat", "lon")


def _scale(factor: float, offset: float = 0.0) -> Callable[[float], float]:
    return lambda value: value * factor + offset


# SenML unit (RFC 8428 and RFC 8798 registry) -> (attribute suffix, conversion to that unit).
UNITS: dict[str, tuple[str, Callable[[float], float]]] = {
    "Cel": ("_c", _scale(1)),
    "K": ("_c", _scale(1, -273.15)),
    "%": ("_pct", _scale(1)),
    "%RH": ("_pct", _scale(1)),
    "%EL": ("_pct", _scale(1)),
    "/": ("_pct", _scale(100)),
    "m": ("_m", _scale(1)),
    "cm": ("_cm", _scale(1)),
    "mm": ("_mm", _scale(1)),
    "km": ("_km", _scale(1)),
    "V": ("_v", _scale(1)),
    "mV": ("_mv", _scale(1)),
    "mA": ("_ma", _scale(1)),
    "A": ("_ma", _scale(1000)),
    "W": ("_w", _scale(1)),
    "kW": ("_kw", _scale(1)),
    "kWh": ("_kwh", _scale(1)),
    "Wh": ("_kwh", _scale(0.001)),
    "Hz": ("_hz", _scale(1)),
    "dB": ("_db", _scale(1)),
    "lx": ("_lux", _scale(1)),
    "Pa": ("_hpa", _scale(0.01)),
    "hPa": ("_hpa", _scale(1)),
    "s": ("_s", _scale(1)),
    "ms": ("_ms", _scale(1)),
    "min": ("_s", _scale(60)),
    "h": ("_s", _scale(3600)),
    "m/s": ("_mps", _scale(1)),
    "km/h": ("_kmh", _scale(1)),
    "ug/m3": ("_ugm3", _scale(1)),
    "ppm": ("_ppm", _scale(1)),
    "ppb": ("_ppb", _scale(1)),
    "kg": ("_kg", _scale(1)),
    "g": ("_kg", _scale(0.001)),
    "deg": ("_deg", _scale(1)),
    "mg/m3": ("_mgm3", _scale(1)),
}

# What a record measures when its name names only the device: its unit says (RFC 8428 section 5.1.1).
UNIT_MEASUREMENTS: dict[str, str] = {
    "Cel": "temperature", "K": "temperature", "%RH": "humidity", "%EL": "battery",
    "V": "voltage", "mV": "voltage", "A": "current", "mA": "current", "W": "power", "kW": "power",
    "Wh": "energy", "kWh": "energy", "Pa": "pressure", "hPa": "pressure", "lx": "illuminance",
    "Hz": "frequency", "m/s": "speed", "km/h": "speed", "%": "level", "/": "level",
    "lat": "lat", "lon": "lon",
}

# Record names (snake_case) -> citywatch measurement and the unit of records that name none: names
# common in SenML feeds that differ from the attribute names rules read (docs/model.md). A default unit
# only where a bare number has one usual meaning (a bare battery may be volts or percent: none).
# A route's `senml_names` extends and overrides it.
SHIPPED_NAMES: dict[str, SenmlName] = {
    name: SenmlName(measurement=measurement, unit=unit)
    for names, measurement, unit in (
        (("pm2_5", "pm25", "pm_2_5", "pm2_5_ugm3"), "pm25", "ug/m3"),
        (("pm10", "pm10_0", "pm_10"), "pm10", "ug/m3"),
        (("pm1", "pm1_0", "pm_1"), "pm1", "ug/m3"),
        (("temp", "temperature", "ambient_temperature", "air_temperature"), "temperature", "Cel"),
        (("hum", "humidity", "rh", "relative_humidity"), "humidity", "%RH"),
        (("co2", "carbon_dioxide"), "co2", "ppm"),
        (("nh3", "ammonia"), "nh3", "ppm"),
        (("h2s", "hydrogen_sulfide", "hydrogen_sulphide"), "h2s", "ppm"),
        (("battery", "batt", "battery_level"), "battery", None),
        (("fill", "fill_level"), "fill", None),
        (("lat", "latitude"), "lat", None),
        (("lon", "lng", "longitude"), "lon", None),
    )
    for name in names
}

# A mapped name's unit is the unit wanted: a record in one of these units is converted into it.
_CONVERT_INTO: dict[tuple[str, str], float] = {
    ("mg/m3", "ug/m3"): 1000.0, ("ug/m3", "mg/m3"): 0.001, ("ppb", "ppm"): 0.001, ("ppm", "ppb"): 1000.0,
}


class SenmlCodec:
    name = "senml"

    def __init__(
        self,
        devices: DeviceLookup,
        *,
        device_id_prefix: str = "",
        names: Mapping[str, SenmlName] | None = None,
        device_position: str = "registry",
    ) -> None:
        self._devices = devices
        self._prefix = device_id_prefix
        self._network_position_wins = device_position == "network"
        self._names = dict(SHIPPED_NAMES)
        self._names.update({_snake(name): meaning for name, meaning in (names or {}).items()})

    def decode(self, topic: str, payload: bytes, received_time_ms: int) -> list[Event]:
        pack = c.parse_json(payload)
        if not isinstance(pack, list):
            raise CodecError(
                c.INVALID_FIELD, f"payload: expected a SenML pack (a JSON array), got {c.preview(pack)}"
            )
        if not pack:
            raise CodecError("empty_batch", "payload: the SenML pack has no records")
        if len(pack) > MAX_RECORDS:
            raise CodecError(
                "batch_too_large", f"payload: {len(pack)} records, at most {MAX_RECORDS} allowed"
            )
        topic_device = topic.rsplit("/", 1)[-1]
        base: dict[str, Any] = {"bn": "", "bt": 0.0, "bu": None, "bv": None, "bs": None}
        # (device, time ms) -> attributes, location parts, units; insertion order kept.
        groups: dict[tuple[str, int], dict[str, Any]] = {}
        for index, item in enumerate(pack):
            where = f"[{index}]"
            record = c.obj(item, where)
            self._check_fields(record, where)
            self._update_base(record, base, where)
            if _RECORD_FIELDS.isdisjoint(record) and base["bv"] is None and base["bs"] is None:
                continue  # sets base fields only
            name = c.text(record, "n", where, required=False) or ""
            full_name = base["bn"] + name
            if not full_name or not _NAME.fullmatch(full_name):
                raise CodecError(
                    c.INVALID_FIELD,
                    f"{where}.n: resolved name {full_name!r} must start with a "
                    "letter or digit and use only A-Z a-z 0-9 - : . / _",
                )
            device, named = self._split(base["bn"], name, topic_device)
            time_ms = self._time_ms(record, base, where, received_time_ms)
            value, is_sum = self._value(record, base, where)
            unit = c.text(record, "u", where, required=False, max_len=32) or base["bu"]
            measurement, unit, value = self._measurement(named, unit, value, where)
            group = groups.setdefault(
                (device, time_ms), {"attributes": {}, "lat": None, "lon": None, "units": {}}
            )
            self._put(group, measurement, unit, value, is_sum, where)
        events = []
        # Chronological, as resolved records are (RFC 8428 section 4.6); one instant keeps pack order.
        for (device, time_ms), group in sorted(groups.items(), key=lambda item: item[0][1]):
            attributes = group["attributes"]
            if group["units"]:
                attributes["units"] = group["units"]
            location = None
            if group["lat"] is not None or group["lon"] is not None:
                location = c.location(group["lat"], group["lon"], "location")
            device_id = self._prefix + device
            known = self._devices.get(device_id)
            fixed = known is not None and known.lat is not None and known.lon is not None
            if fixed and not self._network_position_wins:
                location = None  # the registry adds the registered position
            canonical = msgspec.json.encode(attributes, order="sorted").decode()
            events.append(
                Event(
                    event_id=stable_id("senml", device_id, time_ms, canonical),
                    device_id=device_id,
                    kind=UNREGISTERED_KIND if known is None else known.kind,
                    event_time_ms=time_ms,
                    ingest_time_ms=received_time_ms,
                    attributes=attributes,
                    location=location if isinstance(location, Location) else None,
                    source=self.name,
                )
            )
        return events

    def _registered(self, device: str) -> bool:
        return self._devices.get(self._prefix + device) is not None

    def _split(self, base_name: str, name: str, topic_device: str) -> tuple[str, str | None]:
        """(device, measurement name or None when the name names only the device); see the module doc."""
        if base_name and name:
            device = base_name.rstrip(_BASE_NAME_END)
            if device:
                return device, name
        # A base name standing alone names the device and may end in the separator meant for names.
        full = (base_name + name) if name else (base_name.rstrip(_BASE_NAME_END) or base_name)
        if self._registered(full):
            return full, None
        for end in range(len(full) - 2, 0, -1):
            if full[end] in ":/_" and self._registered(full[:end]):
                return full[:end], full[end + 1 :]
        urn = _DEVICE_URN.fullmatch(full)
        if urn is not None:
            return urn[1], urn[2] or None
        if ":" not in full and "/" not in full and topic_device:
            return topic_device, full
        device, _, rest = full.rpartition("/")
        device = device.rstrip(_BASE_NAME_END)
        if device and rest:
            return device, rest
        return full, None

    def _measurement(
        self, named: str | None, unit: str | None, value: Any, where: str
    ) -> tuple[str, str | None, Any]:
        """The citywatch measurement of a record, the unit its value is in, and the value in that unit."""
        if named is None:
            return UNIT_MEASUREMENTS.get(unit or "", "value"), unit, value
        key = _snake(named)
        meaning = self._names.get(key)
        if meaning is None:
            return key or "value", unit, value
        if unit is None or meaning.unit is None or unit == meaning.unit:
            return meaning.measurement, unit or meaning.unit, value
        factor = _CONVERT_INTO.get((unit, meaning.unit))
        if factor is None or not c.is_finite_number(value):
            return meaning.measurement, unit, value
        return meaning.measurement, meaning.unit, round(float(value) * factor, 9)

    def _check_fields(self, record: dict[str, Any], where: str) -> None:
        for key in record:
            if key not in _KNOWN_FIELDS and key.endswith("_"):
                raise CodecError(
                    "unknown_field",
                    f"{where}.{key}: a must-understand field this codec does not "
                    "implement (RFC 8428 section 4.4)",
                )

    def _update_base(self, record: dict[str, Any], base: dict[str, Any], where: str) -> None:
        version = c.integer(record, "bver", where, required=False, low=1)
        if version is not None and version > SUPPORTED_VERSION:
            raise CodecError(
                c.INVALID_FIELD, f"{where}.bver: version {version} is newer than {SUPPORTED_VERSION}"
            )
        if "bn" in record:
            base["bn"] = c.text(record, "bn", where, required=False) or ""
        if "bt" in record:
            base["bt"] = c.number(record, "bt", where, required=False) or 0.0
        if "bu" in record:
            base["bu"] = c.text(record, "bu", where, required=False, max_len=32)
        if "bv" in record:
            base["bv"] = c.number(record, "bv", where, required=False)
        if "bs" in record:
            base["bs"] = c.number(record, "bs", where, required=False)

    def _time_ms(
        self, record: dict[str, Any], base: dict[str, Any], where: str, received_time_ms: int
    ) -> int:
        offset = c.number(record, "t", where, required=False) or 0.0
        seconds = base["bt"] + offset
        if not abs(seconds) < c.MAX_EPOCH_SECONDS:
            raise CodecError(c.INVALID_FIELD, f"{where}.t: resolved time is not finite")
        if seconds < RELATIVE_TIME_LIMIT_S:
            time_ms = received_time_ms + round(seconds * 1000)
        else:
            time_ms = round(seconds * 1000)
        return c.plausible(time_ms, f"{where}.t", received_time_ms)

    def _value(self, record: dict[str, Any], base: dict[str, Any], where: str) -> tuple[Any, bool]:
        present = [key for key in ("v", "vs", "vb", "vd") if record.get(key) is not None]
        if len(present) > 1:
            raise CodecError(c.INVALID_FIELD, f"{where}: one value per record, got {', '.join(present)}")
        if present:
            key = present[0]
            if key == "v":
                value = c.number(record, "v", where)
                assert value is not None
                return (value + base["bv"]) if base["bv"] is not None else value, False
            if key == "vb":
                return c.boolean(record, "vb", where), False
            return c.text(record, key, where, max_len=4096), False
        if record.get("s") is not None:
            total = c.number(record, "s", where)
            assert total is not None
            return (total + base["bs"]) if base["bs"] is not None else total, True
        if base["bv"] is not None:
            return base["bv"], False
        raise CodecError(
            c.MISSING_FIELD, f"{where}.v: the record has no value (v, vs, vb, vd) and no sum (s)"
        )

    def _put(
        self, group: dict[str, Any], measurement: str, unit: str | None, value: Any, is_sum: bool, where: str
    ) -> None:
        part = unit if unit in _LOCATION else measurement if measurement in _LOCATION else None
        if part is not None and not is_sum:
            if group[part] is not None:
                raise CodecError(c.INVALID_FIELD, f"{where}: a second {part} at the same time")
            group[part] = value
            return
        name = _snake(measurement) or "value"
        if is_sum:
            name += "_sum"
        if (
            unit is not None
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and unit in UNITS
        ):
            suffix, convert = UNITS[unit]
            if not name.endswith(suffix):
                name += suffix
            value = round(convert(float(value)), 9)
            if not math.isfinite(value):
                raise CodecError(c.INVALID_FIELD, f"{where}.v: {name} overflows after unit conversion")
        elif unit is not None:
            group["units"][name] = unit
        if name in group["attributes"]:
            raise CodecError(c.INVALID_FIELD, f"{where}.n: a second value for {name!r} at the same time")
        group["attributes"][name] = value


def _snake(name: str) -> str:
    """A name as attribute names are written: lower case, words joined by `_` (`PM2.5` -> `pm2_5`)."""
    return _NOT_WORD.sub("_", name.lower()).strip("_")
