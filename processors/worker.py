"""The processor loop: poll the bus, judge, store, commit. The same loop runs on every bus.

Results are written and flushed to the store before the bus offsets are committed, so a crash replays
input rather than losing it, and the store's idempotent writes absorb the replay.

Running values, the bins' forecasts and the exposure totals, are written at most once every
`running_values_every_ms` of the worker's clock and at the end of a run (processors/running_values.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from core.metrics import Metrics
from core.models import Event, Violation
from processors.bus import Batch, BusConsumer
from processors.engine import Engine, EngineOutput
from processors.running_values import HeldRunningValues
from store.base import Store

log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class ProcessorWorker:
    def __init__(self, consumer: BusConsumer, engine: Engine, store: Store, metrics: Metrics, *,
                 batch_events: int, poll_timeout_s: float = 0.1,
                 now_ms: Callable[[], int] = wall_clock_ms,
                 on_stored: Callable[[Sequence[Event]], None] | None = None,
                 tag_violation: Callable[[Violation], Violation] | None = None,
                 input_live: Callable[[], bool] = lambda: True,
                 on_violations: Sequence[Callable[[Sequence[Violation]], object]] = (),
                 running_values_every_ms: int = 1000) -> None:
        self.consumer = consumer
        self.engine = engine
        self.store = store
        self.metrics = metrics
        self.batch_events = batch_events
        self.poll_timeout_s = poll_timeout_s
        self.now_ms = now_ms
        # Called with each batch of events once it is durable, before it is judged (benchmarks measure
        # latency with it).
        self.on_stored = on_stored
        # Called with each batch's violation state changes once they are durable (the alerts feed).
        self.on_violations = list(on_violations)
        # Adds grid, district and owning department to each violation before it is stored.
        self.tag_violation = tag_violation
        # False while the input is cut off (ingest disconnected): silence-judging rules pause.
        self.input_live = input_live
        # Forecasts and exposure totals not written yet: the newest per key.
        self._running_values = HeldRunningValues(running_values_every_ms)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="citywatch-processor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish: the bus must be closed first, so the loop drains it, judges what is held and exits."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("processor did not stop within %.0f s", timeout_s)

    def _run(self) -> None:
        try:
            while True:
                batch = self.consumer.poll(self.batch_events, self.poll_timeout_s)
                self.step(batch)
                if self.consumer.drained or (self._stop.is_set() and not len(batch)):
                    break
            self._write(Batch(), self.engine.drain(), final=True)
        except BaseException as exc:  # surfaced through readiness; the runtime decides what to do
            log.exception("processor stopped on an unexpected error")
            self.error = exc

    def step(self, batch: Batch) -> EngineOutput:
        """Store one batch's events, judge them, store what the rules made, then commit the batch (also
        called with an empty batch to move time).

        The events are stored and flushed before the rules run: they are queryable then, whatever the
        rules take for this batch (the rules judge most events only after the allowed lateness anyway, in
        a later step). A crash in between leaves stored events whose judging is replayed (Kafka) or lost
        with the in-memory bus, as a crash after storing always did."""
        started = time.perf_counter()
        if batch.events:
            self.store.write_events(batch.events)
            self.store.flush()
            if self.on_stored is not None:
                self.on_stored(batch.events)
        out = self.engine.process(batch.events, self.now_ms(), input_live=self.input_live())
        self._write(batch, out)
        if len(batch):
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
        return out

    def _write(self, batch: Batch, out: EngineOutput, *, final: bool = False) -> None:
        dead_letters = [*batch.dead_letters, *out.dead_letters]
        if dead_letters:
            self.store.write_dead_letters(dead_letters)
        if out.violations:
            tagged = out.violations if self.tag_violation is None else [
                self.tag_violation(violation) for violation in out.violations]
            self.store.write_violations(tagged)
        self._running_values.hold(out)
        running = self._running_values.write_due(self.store, self.now_ms(), now=final)
        if dead_letters or out.violations or running:
            self.store.flush()
        if out.violations:
            self._publish_violations(tagged)
        self.consumer.commit()
        self.metrics.events_processed.inc(len(batch.events))
        if out.duplicates:
            self.metrics.duplicate_events.inc(out.duplicates)
        if out.late_events:
            self.metrics.late_events.inc(len(out.late_events))
        if out.suspect_events:
            self.metrics.suspect_events.inc(len(out.suspect_events))
        for violation in out.violations:
            self.metrics.violations.labels(violation.type, violation.status.value).inc()
        for letter in out.dead_letters:
            if letter.reason == "rule_error":
                self.metrics.rule_errors.labels(letter.source.removeprefix("rule:")).inc()
            else:  # input a rule rejected (Emitter.reject) is bad input like any other dead letter
                self.metrics.dead_letters.labels(reason=letter.reason).inc()

    def _publish_violations(self, violations: Sequence[Violation]) -> None:
        for callback in self.on_violations:
            try:
                callback(violations)
            except Exception:  # consumers of changes must never stop judging and storing
                log.exception("violation callback %r failed", callback)

