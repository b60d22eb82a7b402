"""Configuration sections for device formats and places: vendor field maps, grids, department routing.

Kept apart from core/settings.py so that the shared settings module only gains a few lines; the
models follow the same rules (unknown keys are errors, every field is described, validated at load).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SentinelAction(StrEnum):
    DEAD_LETTER = "dead_letter"  # the whole uplink is rejected: the reading cannot be trusted
    DROP_FIELD = "drop_field"  # the field is left out and named in the event's `dropped_fields`


class VendorField(_Section):
    """How one decoded field of a vendor payload becomes one citywatch attribute."""

    source: str = Field(
        min_length=1,
        description="Key in the decoded payload; dots walk into objects, e.g. `distance` or `sensor.level`. "
        "Matched as decoders vary it: case and `_` `-` or spaces do not count (`TempC_DS18B20` matches "
        "`tempc_ds18b20` and `TempCDS18B20`); a key spelled exactly as written wins over a near one.",
    )
    aliases: list[str] = Field(
        default_factory=list,
        description="Other keys other versions of the decoder use for this field, tried after `source` in "
        "order; the first present gives the value. Every one of them counts as mapped.",
    )
    attribute: str = Field(min_length=1, description="citywatch attribute it becomes, e.g. distance_mm.")
    unit: str | None = Field(
        None,
        description="Unit the vendor sends when the value is a bare number (mm, cm, m, V, mV, %, fraction, "
        "C, F). Strings such as '1234 mm' or '3.42 V' carry their own unit, which wins. Unset: the value "
        "is taken as it is (numbers, booleans, text).",
    )
    values: dict[str, bool | float | str] | None = Field(
        None, description="Maps text values to attribute values, e.g. {normal: false, tilt: true}."
    )
    sentinels: list[str] = Field(
        default_factory=list,
        description="Values that mean 'no valid reading', e.g. 'Invalid Reading', 'No Sensor', or '0.00' "
        "where a decoder sends 0.00 for a missing probe. Text matches whatever its case and spacing; a "
        "number matches the same number, bare or with a unit ('0.00' matches 0, '0 °C' and '0.00 °C').",
    )
    invalid_below: float | None = Field(
        None,
        description="A number below this (in the field's `unit`) is treated as a sentinel: what some "
        "versions of a decoder call 'Invalid Reading' and others send as the number itself.",
    )
    on_sentinel: SentinelAction = Field(
        SentinelAction.DEAD_LETTER,
        description="dead_letter: reject the whole uplink; drop_field: keep the rest of the reading.",
    )
    required: bool = Field(False, description="A payload without this field is rejected.")

    @field_validator("sentinels", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        # YAML reads `sentinels: [0.00]` as a number; it means the same as the text "0.00".
        if isinstance(value, list):
            return [str(item) if isinstance(item, int | float) and not isinstance(item, bool) else item
                    for item in value]
        return value

    @property
    def names(self) -> list[str]:
        """The keys this field is read from, in the order they are tried."""
        return [self.source, *self.aliases]


class VendorMap(_Section):
    """The decoded payload of one device model (as its LoRaWAN network server's decoder outputs it)."""

    description: str = Field("", description="What the model is and which decoder this map expects.")
    aliases: list[str] = Field(
        default_factory=list,
        description="Other names devices of this model may be registered under (their `model`). Names "
        "match whatever their case, spacing and punctuation, and without the vendor's name in front "
        "(`LDDS75` and `dragino ldds75` find `Dragino LDDS75`).",
    )
    fields: list[VendorField] = Field(min_length=1, description="Decoded fields to attributes.")
    ignore: list[str] = Field(
        default_factory=list,
        description="Decoded fields this map leaves out on purpose (e.g. a decoder's `Node_type`): not "
        "reported as unmapped. Matched like `source`.",
    )
    keep_unmapped: bool = Field(
        False, description="Copy decoded fields that no entry maps into attributes (under their own name)."
    )


class SenmlName(_Section):
    """What a SenML record name means: the citywatch measurement, and its unit when a record names none."""

    measurement: str = Field(
        min_length=1, pattern=r"^[a-z0-9_]+$",
        description="citywatch measurement without its unit, e.g. pm25; the record's SenML unit adds the "
        "suffix (ug/m3 -> pm25_ugm3). `lat` and `lon` set the event's position.",
    )
    unit: str | None = Field(
        None, description="SenML unit of records that carry none (and no base unit), e.g. ug/m3."
    )

    @model_validator(mode="before")
    @classmethod
    def _measurement_alone(cls, data: object) -> object:
        """`pm2_5: pm25` is short for `pm2_5: {measurement: pm25}`."""
        return {"measurement": data} if isinstance(data, str) else data


class DepartmentRoute(_Section):
    """One row of the routing table: who owns events of a kind or violations of a type (in a district)."""

    department: str = Field(min_length=1, description="Department that owns matching events/violations.")
    kind: str | None = Field(None, description="Event kind this row is for; unset matches every kind.")
    violation_type: str | None = Field(
        None, description="Violation type this row is for; unset matches every type."
    )
    district: str | None = Field(None, description="District this row is for; unset matches every district.")


class GeoSettings(_Section):
    grids_file: Path | None = Field(
        None,
        description="GeoJSON FeatureCollection of grid polygons; each feature's properties need `grid` and "
        "`district` (relative to the config file).",
    )
    districts_file: Path | None = Field(
        None,
        description="GeoJSON FeatureCollection of district polygons with a `district` property, used for "
        "points outside every grid (relative to the config file).",
    )
    index_cell_deg: float | None = Field(
        None, gt=0, description="Cell size of the spatial index in degrees; unset: chosen from the polygons."
    )
    departments: list[DepartmentRoute] = Field(
        default_factory=list,
        description="Routing table, first matching row wins. Violations match on violation_type (and "
        "district), events on kind (and district).",
    )
    default_department: str | None = Field(
        None, description="Department when no row matches; unset: no department tag is added."
    )

    @model_validator(mode="after")
    def _rows_name_one_subject(self) -> GeoSettings:
        for index, row in enumerate(self.departments):
            if row.kind is not None and row.violation_type is not None:
                raise ValueError(f"departments[{index}]: give kind or violation_type, not both")
        return self


# Attributes the Frigate codec derives itself; a mapped attribute may not take one of these names.
FRIGATE_DERIVED_ATTRIBUTES = frozenset({
    "track_id", "stage", "label", "score", "zones", "entered_zones", "stationary", "box", "position",
    "speed_kmh", "heading_deg", "plate", "plate_score", "snapshot_url", "clip_url",
})


def _class_names(mapping: object, where: str) -> object:
    """Class names compared case-insensitively (Frigate's class names are whatever the user typed)."""
    if not isinstance(mapping, dict):
        return mapping
    named: dict[str, object] = {}
    for key, value in mapping.items():
        if isinstance(key, bool):
            # PyYAML reads an unquoted yes / no / on / off / true / false key as a boolean.
            raise ValueError(f"{where}: class name {key!r} is not text: quote it (\"yes\", \"no\"), YAML "
                             "reads unquoted yes/no/on/off as true/false")
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"{where}: class names must be non-empty text, got {key!r}")
        folded = key.strip().lower()
        if folded in named:
            raise ValueError(f"{where}: class {key!r} is given twice (names are compared ignoring case)")
        named[folded] = value
    return named


class FrigateAttribute(_Section):
    """How one track attribute (e.g. `helmet`, which the no_helmet rule reads) is read from what Frigate
    says about an object: its object classification models' classes and its sub labels / attribute labels.
    Class names and labels are compared ignoring case."""

    models: dict[str, dict[str, bool | float | str]] = Field(
        default_factory=dict,
        description="Frigate 0.17+ object classification models that judge it, each with what its classes "
        "mean, e.g. {helmet: {\"yes\": true, \"no\": false}}. An attribute-type model is read from "
        "`after.<model>` in frigate/events; either type from `classification` tracked object updates.",
    )
    labels: dict[str, bool | float | str] = Field(
        default_factory=dict,
        description="Labels that set it, e.g. {helmet: true, no_helmet: false}: a sub label (from a "
        "sub-label-type classifier or the detector's logo attributes) or an attribute label of the "
        "detection model seen on the object in the current frame (`after.current_attributes`).",
    )

    @model_validator(mode="before")
    @classmethod
    def _fold_class_names(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        folded = dict(data)
        if isinstance(folded.get("models"), dict):
            folded["models"] = {model: _class_names(classes, f"models.{model}")
                                for model, classes in folded["models"].items()}
        folded["labels"] = _class_names(folded.get("labels", {}), "labels")
        return folded


def default_frigate_attributes() -> dict[str, FrigateAttribute]:
    """A helmet classifier as Frigate's docs name it: an attribute-type model `helmet` (the object
    classification docs) or `helmet_detector` (the MQTT docs) with classes yes / no, or labels
    helmet / no_helmet from a sub-label classifier or a detection model's attributes."""
    yes_no: dict[str, bool | float | str] = {"yes": True, "no": False}
    return {"helmet": FrigateAttribute(models={"helmet": yes_no, "helmet_detector": yes_no},
                                       labels={"helmet": True, "no_helmet": False})}
