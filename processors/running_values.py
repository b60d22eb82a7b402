"""Running values held between store writes: the bins' forecasts and the exposure totals.

The store keeps only the newest of each per key (a forecast per (type, device), a total per (day, device,
counter)), and a bin reading makes a new one of each, so writing them with every batch cost more store
writes than the events themselves (BENCHMARKS.md, "Running values once a second"). Both processor loops
(processors/worker.py, processors/kafka_processor.py) hold the newest of each key here and write them at
most once every `every_ms` of their clock, and whenever a write must not wait: the end of a run, and in
Kafka mode before a checkpoint (a checkpoint must never cover a total the store does not have yet).
"""

from __future__ import annotations

from collections.abc import Sequence

from core.models import ExposureTotal, Prediction
from processors.engine import EngineOutput
from store.base import Store


class HeldRunningValues:
    def __init__(self, every_ms: int) -> None:
        self.every_ms = every_ms
        self._predictions: dict[tuple[str, str], Prediction] = {}
        self._exposures: dict[tuple[str, str, str], ExposureTotal] = {}
        self._due_ms: int | None = None  # None: at the next write

    def __bool__(self) -> bool:
        return bool(self._predictions or self._exposures)

    def hold(self, out: EngineOutput) -> None:
        """Keep a batch's forecasts and totals; a newer one of a key replaces the one held."""
        keep_newest(out.records, self._predictions)
        exposures = self._exposures
        for total in out.exposures:  # running totals: a later one of a key includes the earlier
            exposures[(total.day, total.device_id, total.counter)] = total

    def write_due(self, store: Store, now_ms: int, *, now: bool = False) -> bool:
        """Write what is held if a write is due (or `now`); True if anything was written. The caller
        flushes the store."""
        if not self or (not now and self._due_ms is not None and now_ms < self._due_ms):
            return False
        if self._predictions:
            store.write_predictions(list(self._predictions.values()))
        if self._exposures:  # the store keeps the latest (docs/denominators.md)
            store.write_exposures(list(self._exposures.values()))
        self._predictions, self._exposures = {}, {}
        self._due_ms = now_ms + self.every_ms
        return True


def keep_newest(records: Sequence[object], newest: dict[tuple[str, str], Prediction]) -> None:
    """Put each forecast among `records` into `newest`, unless it holds a newer one of its (type, device)."""
    for record in records:
        if isinstance(record, Prediction):
            key = (record.type, record.device_id)
            kept = newest.get(key)
            if kept is None or record.computed_time_ms >= kept.computed_time_ms:
                newest[key] = record
