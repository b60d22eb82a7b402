"""Builds the enabled rules from settings: the one place that knows every rule."""

from __future__ import annotations

from typing import Any

from citywatch.settings import RuleSettings
from processors.devices import DeviceLookup
from processors.rule import Rule
from processors.rules.bin_overflow import BinOverflowRule


def build_rules(settings: RuleSettings, devices: DeviceLookup) -> list[Rule[Any]]:
    rules: list[Rule[Any]] = []
    if settings.bin_overflow.enabled:
        rules.append(BinOverflowRule(settings.bin_overflow, devices))
    return rules
