"""`citywatch replay FILE`: run a recorded feed through the configured ingest and rules.

A recording is JSON lines of `{"topic": ..., "payload": ..., "time": ...}`: the MQTT topic, the payload
(a JSON value, which is re-encoded, or a string sent as its UTF-8 bytes) and when it was received (epoch
ms or RFC 3339; optional). Each message goes through the same normalizer (codecs, validation, registry)
and the same engine as `citywatch up`, and reaches the engine at its recorded receive time: the engine's
wall clock is the recording's, message by message, never the replaying machine's. Between messages the
engine is ticked as the live processor is by its idle polls (see `Replayer.idle_tick_ms`), and what
falls due in between (a held event's release, a device's silence reaching its limit) happens at its exact
recorded time (processors/engine.py). So a replay gives what the live system gave, at any speed: as fast
as possible by default, or paced at a multiple of real time. Cities use it to try a threshold change
against their golden recordings.
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

from core.models import DeadLetter, Event, ExposureTotal, Violation
from core.settings import ConfigError, Settings
from ingest.codecs.catalogue import build_codec
from ingest.geo import GeoError, GeoTagger
from ingest.normalizer import Normalizer
from ingest.registry import DeviceRegistry
from processors.catalogue import build_rules
from processors.engine import Engine, EngineOutput
from store.base import Store

# Messages whose events are written to the store at once: store writes do not change what is judged.
STORE_BATCH_MESSAGES = 500
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
                             dedup_capacity=settings.pipeline.dedup_window_events,
                             time_zone=settings.traffic.time_zone)
        self.store = store
        # Between messages the engine is ticked at least every `rules.device_offline.max_tick_gap_s` of
        # recorded time: a longer gap between ticks counts as a stalled process (only its start counts as
        # silence), and a recording has no stalls. What falls due in between happens at its own time
        # whatever the tick (processors/engine.py).
        self.idle_tick_ms = max(1, int(settings.rules.device_offline.max_tick_gap_s * 1000))

    def run(self, messages: Iterable[Message], *, speed: float | None = None,
            on_violations: Callable[[list[Violation]], None] | None = None,
            sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic) -> ReplayResult:
        """Replay; `speed` 2.0 plays twice as fast as recorded, None as fast as possible.

        The result is the same at every speed: only when violations come out (and `on_violations` is
        called) follows the pace.
        """
        replay = _Run(self, ReplayResult(), speed, on_violations, sleep, clock)
        for message in messages:
            replay.message(message)
        replay.finish()
        return replay.result


class _Run:
    """One replay: the recorded clock, the pace and the store writes not yet made."""

    def __init__(self, replayer: Replayer, result: ReplayResult, speed: float | None,
                 on_violations: Callable[[list[Violation]], None] | None,
                 sleep: Callable[[float], None], clock: Callable[[], float]) -> None:
        self.replayer = replayer
        self.engine = replayer.engine
        self.result = result
        self.speed = speed
        self.on_violations = on_violations
        self.sleep = sleep
        self.clock = clock
        # The recorded time of the first message and the replay clock then (pace), the newest recorded
        # time handed to the engine.
        self.first_ms: int | None = None
        self.started = 0.0
        self.now_ms: int | None = None
        self.events: list[Event] = []
        self.letters: list[DeadLetter] = []
        self.violations: list[Violation] = []
        # The newest exposure total per (day, device, counter) not yet written (the store keeps the latest).
        self.exposures: dict[tuple[str, str, str], ExposureTotal] = {}
        self.unwritten = 0

    def message(self, message: Message) -> None:
        if self.now_ms is None:
            self.first_ms, self.started = message.received_ms, self.clock()
        else:
            self._idle_until(message.received_ms)
        self._wait_for(message.received_ms)
        handled = self.replayer.normalizer.handle(message.topic, message.payload, message.received_ms)
        self.result.messages += 1
        self._step(handled.events, handled.dead_letters, message.received_ms)
        self.unwritten += 1
        if self.unwritten >= STORE_BATCH_MESSAGES:
            self._write()

    def finish(self) -> None:
        self._record(self.engine.drain())
        self._write()
        if self.replayer.store is not None:
            self.replayer.store.flush()

    def _idle_until(self, until_ms: int) -> None:
        """Tick the engine between two messages, as the live processor's idle polls do; when paced, also
        wake at what falls due (a device going offline) so it comes out on time."""
        assert self.now_ms is not None
        while True:
            next_ms = self.now_ms + self.replayer.idle_tick_ms
            if self.speed is not None:
                due_ms = self.engine.next_step_ms()
                if due_ms is not None:
                    next_ms = min(next_ms, due_ms)
            if next_ms >= until_ms:
                return
            self._wait_for(next_ms)
            self._step([], [], next_ms)

    def _wait_for(self, recorded_ms: int) -> None:
        """When paced, sleep until `recorded_ms` is due in real time (writing what is pending first)."""
        if self.speed is None or self.first_ms is None:
            return
        ahead_s = (recorded_ms - self.first_ms) / 1000 / self.speed - (self.clock() - self.started)
        if ahead_s > 0:
            self._write()
            self.sleep(ahead_s)

    def _step(self, events: list[Event], letters: list[DeadLetter], at_ms: int) -> None:
        self.now_ms = at_ms if self.now_ms is None else max(self.now_ms, at_ms)
        out = self.engine.process(events, at_ms)
        self.result.events += len(events)
        self.events.extend(events)
        self.letters.extend(letters)
        self.result.dead_letters.update(letter.reason for letter in letters)
        self._record(out)

    def _record(self, out: EngineOutput) -> None:
        violations = [self.replayer.geo.tag_violation(violation) for violation in out.violations]
        self.result.violations.extend(violations)
        self.result.dead_letters.update(letter.reason for letter in out.dead_letters)
        self.result.duplicates += out.duplicates
        self.result.late_events += len(out.late_events)
        self.letters.extend(out.dead_letters)
        self.violations.extend(violations)
        for total in out.exposures:
            self.exposures[(total.day, total.device_id, total.counter)] = total
        if violations and self.on_violations is not None:
            self.on_violations(violations)

    def _write(self) -> None:
        store = self.replayer.store
        if store is not None:
            if self.events:
                store.write_events(self.events)
            if self.letters:
                store.write_dead_letters(self.letters)
            if self.violations:
                store.write_violations(self.violations)
            if self.exposures:
                store.write_exposures(list(self.exposures.values()))
        self.events, self.letters, self.violations, self.exposures = [], [], [], {}
        self.unwritten = 0
