"""Emitter.reject: a rule dead-letters input that breaks its contract, and the pipeline goes on."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from core.models import Event
from processors.engine import Engine
from processors.rule import Emitter, Rule
from tests.support.events import reading


class Count(msgspec.Struct):
    seen: int = 0


class NeedsLevel(Rule[Count]):
    name: ClassVar[str] = "needs_level"
    kinds: ClassVar[frozenset[str]] = frozenset({"bin"})
    state_type: ClassVar[type[msgspec.Struct]] = Count
    state_ttl_ms = 60_000

    def on_event(self, state: Count | None, event: Event, out: Emitter) -> Count | None:
        state = state or Count()
        if "level" not in event.attributes:
            out.reject("invalid_field", "attributes.level: missing")
            return state
        state.seen += 1
        return state


def test_rejected_events_are_dead_lettered_with_the_rule_as_source_and_state_is_kept():
    engine = Engine([NeedsLevel()], allowed_lateness_ms=0)
    bad = reading("b", 1)
    out = engine.process([reading("b", 0, level=1), bad, reading("b", 2, level=2)], now_wall_ms=0)
    [letter] = out.dead_letters
    assert (letter.reason, letter.detail, letter.source) == ("invalid_field", "attributes.level: missing",
                                                             "rule:needs_level")
    assert msgspec.json.decode(letter.payload, type=Event) == bad
    assert engine.states["needs_level"].get("b").seen == 2
