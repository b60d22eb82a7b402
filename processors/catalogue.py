"""Builds the enabled rules from settings: the one place that knows every rule."""

from __future__ import annotations

from typing import Any

from citywatch.models import Event
from citywatch.settings import RuleSettings
from processors.devices import DeviceLookup
from processors.rule import Rule
from processors.rules.bin_overflow import BinOverflowRule


def build_rules(settings: RuleSettings, devices: DeviceLookup) -> list[Rule[Any]]:
    rules: list[Rule[Any]] = []
    if settings.bin_overflow.enabled:
        rules.append(BinOverflowRule(settings.bin_overflow, devices))
    return rules


def partition_key(event: Event) -> str:
    """The bus key that brings together every event one rule instance needs (one partition, one state).

    Rules that join signals, detectors and cameras key their state by intersection; the others by device.
    A device's intersection comes from its registry tags or its own attributes, and is the same for all
    its events, so a device always maps to one partition whichever rules are enabled.
    """
    intersection = event.tags.get("intersection") or event.attributes.get("intersection")
    return str(intersection) if intersection else event.device_id
