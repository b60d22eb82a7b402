"""Settings of cases (工单): which violations open a case, who owns it, and how its closure is verified.

Kept apart from core/settings.py so that file only gains the `cases` field. docs/cases.md describes
routing and verification; configs/citywatch.yaml has a commented example.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.local_time import parse_window
from core.open311_settings import Open311Settings
from core.working_calendar import SlaSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CasePriority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class Verification(StrEnum):
    """Who confirms that the work was done: the sensors (the case's violations clear) or a person."""

    SENSOR = "sensor"
    PERSON = "person"


# Violation types whose clearing is itself the evidence that the work was done: the bin was emptied
# (fill below clear_pct), the vehicle left the zone, the water gave its run of clean readings.
SENSOR_VERIFIED_TYPES: Final = MappingProxyType({
    "bin_overflow": Verification.SENSOR,
    "illegal_parking": Verification.SENSOR,
    "water_black_odour": Verification.SENSOR,
})


class CaseRouteMatch(_Section):
    """Which violations a route takes; every list left empty matches anything."""

    types: list[str] = Field(default_factory=list, description="Violation types (bin_overflow ...).")
    grids: list[str] = Field(default_factory=list, description="The violation's `grid` tag.")
    districts: list[str] = Field(default_factory=list, description="The violation's `district` tag.")
    departments: list[str] = Field(
        default_factory=list, description="The violation's `department` tag (from geo.departments).")
    hours: list[str] = Field(
        default_factory=list, description="Local time windows 'HH:MM-HH:MM' (traffic.time_zone) the "
        "violation started in; split a window across midnight into '22:00-24:00' and '00:00-06:00'.")

    @field_validator("hours")
    @classmethod
    def _windows_parse(cls, hours: list[str]) -> list[str]:
        for window in hours:
            parse_window(window)
        return hours


class CaseRoute(_Section):
    match: CaseRouteMatch = Field(default_factory=CaseRouteMatch, description="Which violations it takes.")
    department: str = Field(min_length=1, description="The department that owns the case.")
    category: str = Field(min_length=1, description="The event category code of the city's case "
                          "system (e.g. a 城市管理部件/事件 code).")
    priority: CasePriority = Field(CasePriority.NORMAL, description="low, normal, high or urgent.")


class CaseTypeSettings(_Section):
    verify: Verification = Field(description="sensor: the case closes when its violations clear; person: "
                                 "someone with cases:write verifies it.")


class CaseDepartmentSettings(_Section):
    supervisor: str | None = Field(None, min_length=1, description="The department a case of this one "
                                   "escalates to when it breaches its SLA deadline.")


class EscalationSettings(_Section):
    """What a breached SLA deadline does besides its `case_sla_breach` event (docs/cases.md)."""

    supervisor: str | None = Field(None, min_length=1, description="The supervisor department of "
                                   "departments without their own `supervisor`; unset: no escalation.")
    reassign: bool = Field(False, description="Also make the supervisor the owning department (the "
                           "case keeps its state); by default it only records `escalated_to`.")


class CaseSettings(_Section):
    routes: list[CaseRoute] = Field(
        default_factory=list, description="Tried in order; the first match opens (or joins) a case. A "
        "violation no route matches opens none. Empty: cases are only made through the API.")
    types: dict[str, CaseTypeSettings] = Field(
        default_factory=dict, description="Verification per case type, over the defaults: sensor for "
        "bin_overflow, illegal_parking and water_black_odour, person for every other type.")
    open311: Open311Settings = Field(
        default_factory=Open311Settings, description="Open311 GeoReport v2: the services citizens file "
        "cases under, routed like violations of their case type (docs/cases.md).")

    sla: SlaSettings = Field(default_factory=SlaSettings, description="Deadlines: allowances per "
                             "priority, overrides, working calendars (docs/cases.md, \"Working calendar and "
                             "SLA\").")
    departments: dict[str, CaseDepartmentSettings] = Field(
        default_factory=dict, description="Per department: its `supervisor` for SLA escalation.")
    escalation: EscalationSettings = Field(default_factory=EscalationSettings,
                                           description="Escalation of cases that breach their deadline.")
    sla_check_interval_s: float = Field(2.0, gt=0, le=60, description="How often the api role looks for "
                                        "warning times and deadlines reached.")

    def supervisor_of(self, department: str | None) -> str | None:
        """Where a breached case of `department` escalates to; None: nowhere (or it is the supervisor)."""
        own = self.departments.get(department) if department is not None else None
        supervisor = own.supervisor if own is not None and own.supervisor else self.escalation.supervisor
        return supervisor if supervisor != department else None

    def verification_of(self, case_type: str) -> Verification:
        configured = self.types.get(case_type)
        if configured is not None:
            return configured.verify
        return SENSOR_VERIFIED_TYPES.get(case_type, Verification.PERSON)
