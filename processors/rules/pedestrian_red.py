"""Pedestrian against red (行人闯红灯): a person enters a crosswalk while the crosswalk's pedestrian phase
is red, more than `grace_s` after it turned red. One violation per person track and crosswalk.

Keyed by intersection like red_light, so the pedestrian phase and the camera's tracks meet in one state.
"""

from __future__ import annotations

from typing import ClassVar

from core.models import Severity
from core.traffic_settings import ZoneType
from processors.rules.red_light import EnteringOnRedRule

TYPE = "pedestrian_red"


class PedestrianRedRule(EnteringOnRedRule):
    name: ClassVar[str] = TYPE
    zone_type: ClassVar[ZoneType] = ZoneType.CROSSWALK
    severity: ClassVar[Severity] = Severity.LOW
