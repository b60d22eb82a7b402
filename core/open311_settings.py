"""Settings of the Open311 GeoReport v2 service desk (docs/cases.md, "Open311 GeoReport v2"): the services
a citizen app or a 12345 hotline can file a case under, and whether the requests can be read without a key.

Kept apart from core/case_settings.py, which only gains the `open311` field of the `cases` section.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A service code goes into a URL path (/open311/v2/services/{code}.json): no slash, no dot.
SERVICE_CODE_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttributeDatatype(StrEnum):
    """The GeoReport v2 datatypes of a service definition's attribute."""

    STRING = "string"
    NUMBER = "number"
    DATETIME = "datetime"
    TEXT = "text"
    SINGLEVALUELIST = "singlevaluelist"
    MULTIVALUELIST = "multivaluelist"


class AttributeValue(_Section):
    key: str = Field(min_length=1, description="What the client sends as attribute[code].")
    name: str = Field(min_length=1, description="What the citizen sees.")


class ServiceAttribute(_Section):
    """One extra question of a service (GeoReport v2 "GET Service Definition")."""

    code: str = Field(pattern=SERVICE_CODE_PATTERN, description="Sent back as attribute[code].")
    description: str = Field(min_length=1, description="The question put to the citizen.")
    datatype: AttributeDatatype = AttributeDatatype.STRING
    required: bool = False
    variable: bool = Field(True, description="false: information shown to the citizen, nothing to answer.")
    datatype_description: str | None = None
    order: int = Field(1, ge=1, description="1 is shown first.")
    values: list[AttributeValue] = Field(
        default_factory=list, description="The choices of a singlevaluelist or multivaluelist.")

    @model_validator(mode="after")
    def _lists_have_values(self) -> ServiceAttribute:
        listed = self.datatype in (AttributeDatatype.SINGLEVALUELIST, AttributeDatatype.MULTIVALUELIST)
        if listed and not self.values:
            raise ValueError(f"attribute {self.code}: a {self.datatype} needs `values`")
        if not listed and self.values:
            raise ValueError(f"attribute {self.code}: only a singlevaluelist or multivaluelist has `values`")
        return self


class Open311Service(_Section):
    """A kind of request citizens can file, and the case type it becomes (routed like a violation of it)."""

    code: str = Field(pattern=SERVICE_CODE_PATTERN, description="The GeoReport service_code.")
    case_type: str = Field(min_length=1, description="The case type a request becomes; `cases.routes` "
                           "route it as they route a violation of that type.")
    name: str = Field(min_length=1, description="service_name, shown to citizens.")
    description: str = Field("", description="What the service is for.")
    group: str = Field("", description="A category grouping services (sanitation, traffic ...).")
    keywords: list[str] = Field(default_factory=list, description="Synonyms to help citizens find it.")
    notice: str | None = Field(None, description="service_notice: what the city will do about a request.")
    attributes: list[ServiceAttribute] = Field(
        default_factory=list, description="Extra questions (GET services/{code}.json); none: metadata false.")

    @model_validator(mode="after")
    def _attribute_codes_unique(self) -> Open311Service:
        codes = [attribute.code for attribute in self.attributes]
        repeated = sorted({code for code in codes if codes.count(code) > 1})
        if repeated:
            raise ValueError(f"service {self.code}: attribute codes repeated: {', '.join(repeated)}")
        return self


DEFAULT_SERVICES = (
    Open311Service(
        code="sanitation-bin-overflow", case_type="bin_overflow", name="Overflowing bin",
        description="A litter or garbage bin is full and rubbish spills around it.", group="sanitation",
        keywords=["garbage", "rubbish", "trash", "litter", "垃圾桶满溢"],
        notice="Sanitation empties the bin and cleans around it."),
    Open311Service(
        code="water-black-odorous", case_type="water_black_odour", name="Black and odorous water",
        description="A river, canal or pond is black or smells foul.", group="sanitation",
        keywords=["river", "canal", "smell", "pollution", "黑臭水体"]),
    Open311Service(
        code="traffic-illegal-parking", case_type="illegal_parking", name="Illegal parking",
        description="A vehicle is parked where parking is not allowed (a footway, a fire lane, a "
        "crossing).", group="traffic", keywords=["parking", "car", "blocked", "违章停车"]),
    Open311Service(
        code="traffic-signal-broken", case_type="signal_fault", name="Broken traffic signal",
        description="A traffic or pedestrian light is dark, stuck or flashing.", group="traffic",
        keywords=["traffic light", "signal", "lights out", "信号灯故障"],
        attributes=[ServiceAttribute(
            code="signal_state", description="What is the signal doing?",
            datatype=AttributeDatatype.SINGLEVALUELIST, required=True,
            values=[AttributeValue(key="dark", name="Dark"),
                    AttributeValue(key="stuck", name="Stuck on one colour"),
                    AttributeValue(key="flashing", name="Flashing")])]),
)


class Open311Settings(_Section):
    enabled: bool = Field(True, description="Serve /open311/v2/ (docs/cases.md).")
    public_read: bool = Field(
        False, description="Let anyone read the services and the filed requests without an API key (as "
        "most Open311 servers do). Requests never carry the reporter's contact details; without `plates` "
        "their media_url is left out. Off: reading needs `cases:read`.")
    reporter_retention_days: int | None = Field(
        30, gt=0, description="The reporter's contact details (email, phone, names, device and account "
        "ids) are erased this many days after the request's case closed: kept no longer than calling the "
        "citizen back needs (docs/cases.md). null keeps them.")
    services: list[Open311Service] = Field(
        default_factory=lambda: list(DEFAULT_SERVICES),
        description="The services requests are filed under; the default has one each for overflowing "
        "bins, black and odorous water, illegal parking and broken traffic signals.")

    @model_validator(mode="after")
    def _service_codes_unique(self) -> Open311Settings:
        codes = [service.code for service in self.services]
        repeated = sorted({code for code in codes if codes.count(code) > 1})
        if repeated:
            raise ValueError(f"open311 service codes repeated: {', '.join(repeated)}")
        return self

    def service(self, code: str) -> Open311Service | None:
        return next((service for service in self.services if service.code == code), None)
