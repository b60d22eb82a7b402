"""`citywatch replay FILE`: run a recorded feed through the configured ingest and rules.

A recording is JSON lines of `{"topic": ..., "payload": ..., "time": ...}`: the MQTT topic, the payload
(a JSON value, which is re-encoded, or a string sent as its UTF-8 bytes) and when it was received (epoch
ms or RFC 3339; optional). Each message goes through the same normalizer (codecs, validation, registry)
and the same engine as `citywatch up`, with the recorded receive time as the engine's wall clock, so a
replay gives what the live system gave, at any speed: as fast as possible by default, or paced at a
multiple of real time. Cities use it to try a threshold change against their golden recordings.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from core.models import DeadLetter, Event, Violation
from core.settings import ConfigError, Settings
from ingest.codecs.catalogue import build_codec
from ingest.geo import GeoError, GeoTagger
from ingest.normalizer import Normalizer
from ingest.registry import DeviceRegistry
from processors.catalogue import build_rules
from processors.engine import Engine, EngineOutput
from store.base import Store

# Messages handed to the engine at once: large enough to amortise the per-batch work, small enough that
# the recorded receive time (the engine's wall clock) still follows the recording closely.
BATCH_MESSAGES = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ReplayError(Exception):
    """The recording cannot be read; the message names the line."""


class RecordedMessage(msgspec.Struct, forbid_unknown_fields=True):
    topic: str
    payload: Any
    time: int | datetime | None = None


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    received_ms: int


@dataclass
class ReplayResult:
    messages: int = 0
    events: int = 0
    violations: list[Violation] = field(default_factory=list)
    dead_letters: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    late_events: int = 0

    def summary(self) -> str:
        by_type = Counter(f"{v.type}/{v.status.value}" for v in self.violations)
        lines = [f"{self.messages} messages, {self.events} events, {len(self.violations)} violation "
                 f"changes, {self.duplicates} duplicates, {self.late_events} late, "
                 f"{sum(self.dead_letters.values())} dead letters"]
        lines += [f"  {name}: {count}" for name, count in sorted(by_type.items())]
        lines += [f"  dead letter {reason}: {count}" for reason, count in sorted(self.dead_letters.items())]
        return "\n".join(lines)


def read_recording(path: Path) -> Iterator[Message]:
    """The messages of a recording in file order; a line that cannot be read raises ReplayError."""
    decoder = msgspec.json.Decoder(RecordedMessage)
    last_ms: int | None = None
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                recorded = decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ReplayError(f"{path}:{number}: {exc}") from None
            payload = recorded.payload
            body = payload.encode() if isinstance(payload, str) else msgspec.json.encode(payload)
            if isinstance(recorded.time, datetime):
                if recorded.time.tzinfo is None:
                    raise ReplayError(f"{path}:{number}: time has no UTC offset")
                received_ms = (recorded.time - _EPOCH) // timedelta(milliseconds=1)
            elif recorded.time is not None:
                received_ms = recorded.time
            else:
                # Without a receive time the message counts as received with the previous one (or now).
                received_ms = last_ms if last_ms is not None else time.time_ns() // 1_000_000
            last_ms = received_ms
            yield Message(recorded.topic, body, received_ms)


class Replayer:
    """The configured ingest normalizer and rules, driven by recorded messages instead of a broker."""

    def __init__(self, settings: Settings, *, store: Store | None = None) -> None:
        registry = DeviceRegistry(settings.devices)
        try:
            self.geo = GeoTagger.from_settings(settings.geo)
        except GeoError as exc:
            raise ConfigError(str(exc)) from exc
        # The same codecs, registry and grid tagging as `citywatch up` (citywatch/runtime.py).
        self.normalizer = Normalizer(settings.ingest, settings.mqtt.max_payload_bytes, registry,
                                     partial(build_codec, devices=registry, vendor_maps=settings.vendor_maps),
                                     tagger=self.geo.tag_event)
        self.registry = registry
        rules = build_rules(settings.rules, registry, settings.devices, traffic=settings.traffic)
        self.engine = Engine(rules,
                             allowed_lateness_ms=settings.pipeline.allowed_lateness_ms,
                             dedup_capacity=settings.pipeline.dedup_window_events)
        self.store = store

    def run(self, messages: Iterable[Message], *, speed: float | None = None,
            on_violations: Callable[[list[Violation]], None] | None = None,
            sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic) -> ReplayResult:
        """Replay; `speed` 2.0 plays twice as fast as recorded, None as fast as possible."""
        result = ReplayResult()
        events: list[Event] = []
        letters: list[DeadLetter] = []
        pending = 0
        first_ms: int | None = None
        started = clock()
        now_ms = 0
        for message in messages:
            if speed is not None:
                first_ms = message.received_ms if first_ms is None else first_ms
                ahead_s = (message.received_ms - first_ms) / 1000 / speed - (clock() - started)
                if ahead_s > 0:
                    self._flush(events, letters, now_ms, result, on_violations)
                    pending = 0
                    sleep(ahead_s)
            now_ms = message.received_ms
            handled = self.normalizer.handle(message.topic, message.payload, message.received_ms)
            events.extend(handled.events)
            letters.extend(handled.dead_letters)
            result.messages += 1
            pending += 1
            if pending >= BATCH_MESSAGES:
                self._flush(events, letters, now_ms, result, on_violations)
                pending = 0
        self._flush(events, letters, now_ms, result, on_violations)
        self._record([], [], self.engine.drain(), result, on_violations)
        if self.store is not None:
            self.store.flush()
        return result

    def _flush(self, events: list[Event], letters: list[DeadLetter], now_ms: int, result: ReplayResult,
               on_violations: Callable[[list[Violation]], None] | None) -> None:
        out = self.engine.process(events, now_ms)
        self._record(list(events), list(letters), out, result, on_violations)
        events.clear()
        letters.clear()

    def _record(self, events: list[Event], letters: list[DeadLetter], out: EngineOutput,
                result: ReplayResult, on_violations: Callable[[list[Violation]], None] | None) -> None:
        letters = [*letters, *out.dead_letters]
        violations = [self.geo.tag_violation(violation) for violation in out.violations]
        result.events += len(events)
        result.violations.extend(violations)
        result.dead_letters.update(letter.reason for letter in letters)
        result.duplicates += out.duplicates
        result.late_events += len(out.late_events)
        if self.store is not None:
            if events:
                self.store.write_events(events)
            if letters:
                self.store.write_dead_letters(letters)
            if violations:
                self.store.write_violations(violations)
        if violations and on_violations is not None:
            on_violations(violations)
