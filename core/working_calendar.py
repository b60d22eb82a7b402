"""Working calendars and SLA policy settings for cases (closed-loop work orders).

A working calendar says when a department's clock runs: working hours per weekday (several windows a day,
e.g. a lunch break), public holidays, make-up working days (a weekend date worked in exchange for a
holiday, as Chinese holiday schedules do) in the city's IANA time zone, or around the clock. The SLA
policy gives each priority an allowance counted in working time or in calendar time, with overrides per
case type and department. Validated once at load like every other section; the arithmetic is in
processors/cases/calendar.py (docs/cases.md, "Working calendar and SLA").
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.local_time import WEEKDAYS, Weekday, check_time_zone, check_windows

DEFAULT_HOURS = ["08:30-12:00", "14:00-18:00"]
DEFAULT_WARN_AT = 0.8


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkingCalendarSettings(_Section):
    """When working time runs, in local time of `time_zone`."""

    time_zone: str = Field("Asia/Shanghai", description="IANA time zone the hours and dates are local to.")
    around_the_clock: bool = Field(
        False, description="Every instant is working time (24x7 departments); then no days, hours, "
        "holidays or make-up days may be given.",
    )
    days: list[Weekday] = Field(
        default_factory=lambda: list(WEEKDAYS[:5]), description="Working weekdays (mon..sun).",
    )
    hours: list[str] = Field(
        default_factory=lambda: list(DEFAULT_HOURS),
        description="Working windows 'HH:MM-HH:MM' on working days and make-up days, e.g. a morning and "
        "an afternoon around a lunch break.",
    )
    weekday_hours: dict[Weekday, list[str]] = Field(
        default_factory=dict, description="Windows that differ on a working weekday (e.g. fri: "
        "['08:30-12:00', '14:00-16:30']); replace `hours` on that weekday.",
    )
    holidays: list[date] = Field(
        default_factory=list, description="Dates off although their weekday works (public holidays); "
        "weekend dates inside a holiday run may be listed too.",
    )
    makeup_workdays: list[date] = Field(
        default_factory=list, description="Dates that work `hours` although their weekday does not "
        "(调休: a weekend day worked in exchange for a holiday).",
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return check_time_zone(value)

    @field_validator("hours")
    @classmethod
    def _hours_parse(cls, hours: list[str]) -> list[str]:
        check_windows(hours)
        return hours

    @field_validator("weekday_hours")
    @classmethod
    def _weekday_hours_parse(cls, by_day: dict[Weekday, list[str]]) -> dict[Weekday, list[str]]:
        for day, hours in by_day.items():
            if not hours:
                raise ValueError(f"weekday_hours.{day} is empty; leave the day out of `days` instead")
            check_windows(hours)
        return by_day

    @model_validator(mode="after")
    def _consistent(self) -> WorkingCalendarSettings:
        if self.around_the_clock:
            given = sorted(self.model_fields_set & {"days", "hours", "weekday_hours", "holidays",
                                                    "makeup_workdays"})
            if given:
                raise ValueError(f"a calendar around the clock has no {', '.join(given)}")
            return self
        if not self.days or not self.hours:
            raise ValueError("a working calendar needs working days and hours (or around_the_clock: true)")
        if len(set(self.days)) != len(self.days):
            raise ValueError(f"days repeat: {self.days}")
        not_working = sorted(set(self.weekday_hours) - set(self.days))
        if not_working:
            raise ValueError(f"weekday_hours for days that are not in `days`: {not_working}")
        both = sorted(set(self.holidays) & set(self.makeup_workdays))
        if both:
            raise ValueError(f"dates both holidays and make-up working days: {[str(d) for d in both]}")
        already = sorted(day for day in self.makeup_workdays if WEEKDAYS[day.weekday()] in self.days)
        if already:
            raise ValueError("make-up working days that are working weekdays already (wrong year?): "
                             f"{[str(d) for d in already]}")
        return self


class SlaClock(StrEnum):
    """What an allowance counts: the calendar's working time, or every minute (calendar time)."""

    WORKING = "working"
    CALENDAR = "calendar"


def _default_priorities() -> dict[str, SlaTermsSettings]:
    return {
        "urgent": SlaTermsSettings(allowance_minutes=120, clock=SlaClock.CALENDAR),
        "high": SlaTermsSettings(allowance_minutes=240),
        "normal": SlaTermsSettings(allowance_minutes=900),
        "low": SlaTermsSettings(allowance_minutes=2250),
    }


class SlaTermsSettings(_Section):
    """A priority's allowance."""

    allowance_minutes: float = Field(gt=0, description="Time allowed from registration to closing "
                                     "(fractions allowed: 0.5 is thirty seconds).")
    clock: SlaClock = Field(SlaClock.WORKING, description="working: counted in the calendar's working "
                            "time; calendar: every minute counts (around the clock).")
    warn_at: float | None = Field(None, gt=0, lt=1, description="Warn when this share of the allowance is "
                                  "used; unset: the policy's `warn_at`.")


class SlaOverrideSettings(_Section):
    """Different terms for a case type and/or a department (optionally only at one priority)."""

    case_type: str | None = Field(None, min_length=1, description="Applies to this case type only.")
    department: str | None = Field(None, min_length=1, description="Applies to this department only.")
    priority: str | None = Field(None, min_length=1, description="Applies at this priority only; unset: "
                                 "at every priority.")
    allowance_minutes: float | None = Field(None, gt=0, description="Replaces the allowance.")
    clock: SlaClock | None = Field(None, description="Replaces the clock.")
    calendar: str | None = Field(None, min_length=1, description="Working time is counted in this calendar "
                                 "(a name in `calendars`).")
    warn_at: float | None = Field(None, gt=0, lt=1, description="Replaces the warning share.")

    @model_validator(mode="after")
    def _says_something(self) -> SlaOverrideSettings:
        if self.case_type is None and self.department is None:
            raise ValueError("an SLA override names a case_type, a department or both")
        if {"allowance_minutes", "clock", "calendar", "warn_at"}.isdisjoint(self.model_fields_set):
            raise ValueError("an SLA override sets allowance_minutes, clock, calendar or warn_at")
        return self


class SlaSettings(_Section):
    """Allowances per priority, overrides, and the calendars working time is counted in."""

    calendars: dict[str, WorkingCalendarSettings] = Field(
        default_factory=lambda: {"default": WorkingCalendarSettings()},
        description="Named working calendars (a 24x7 department gets one with around_the_clock: true).",
    )
    calendar: str = Field("default", description="The calendar working time is counted in unless an "
                          "override names another.")
    warn_at: float = Field(DEFAULT_WARN_AT, gt=0, lt=1, description="Warn when this share of the allowance "
                           "is used (0.8: at 80%).")
    priorities: dict[str, SlaTermsSettings] = Field(
        default_factory=_default_priorities, description="Terms per priority name.",
    )
    overrides: list[SlaOverrideSettings] = Field(
        default_factory=list, description="Per case type / department terms; the most specific wins "
        "field by field (case type and department > case type > department; one priority > all).",
    )

    @model_validator(mode="after")
    def _references_exist(self) -> SlaSettings:
        if not self.priorities:
            raise ValueError("sla.priorities is empty")
        named = [self.calendar, *(o.calendar for o in self.overrides if o.calendar is not None)]
        unknown = sorted(set(named) - set(self.calendars))
        if unknown:
            raise ValueError(f"unknown calendars {unknown} (configured: {sorted(self.calendars)})")
        priorities = sorted({o.priority for o in self.overrides if o.priority is not None}
                            - set(self.priorities))
        if priorities:
            raise ValueError(f"overrides name unknown priorities {priorities} "
                             f"(configured: {sorted(self.priorities)})")
        keys = [(o.case_type, o.department, o.priority) for o in self.overrides]
        repeated = sorted({key for key in keys if keys.count(key) > 1}, key=str)
        if repeated:
            raise ValueError(f"overrides repeat for (case_type, department, priority): {repeated}")
        return self
