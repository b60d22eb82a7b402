"""Builds the configured store, and the thread that applies its retention policy."""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from core.metrics import Metrics
from core.settings import RetentionSettings, StoreKind, StoreSettings
from store.base import RetentionPolicy, Store

log = logging.getLogger(__name__)


def retention_policy(settings: RetentionSettings) -> RetentionPolicy:
    return RetentionPolicy(
        raw_readings_days=settings.raw_readings_days,
        rollup_days=settings.rollup_days,
        violations_days=settings.violations_days,
        dead_letters_days=settings.dead_letters_days,
    )


def build_store(settings: StoreSettings, metrics: Metrics) -> Store:
    """The store of `settings.kind`; nothing is connected until `start()`."""
    policy = retention_policy(settings.retention)
    if settings.kind is StoreKind.INFLUXDB:
        from store.influx_store import InfluxStore

        return InfluxStore(settings.influxdb, settings.data_dir, policy, metrics=metrics)
    from store.sqlite_store import SqliteStore

    return SqliteStore.in_directory(settings.data_dir, policy)


class Retained(Protocol):
    """A store that deletes what is past its retention when asked."""

    def apply_retention(self, now_ms: int) -> object: ...


class RetentionSweeper:
    """Calls `store.apply_retention(now)` at start and then every `interval_s`."""

    def __init__(self, store: Retained, interval_s: float, name: str = "citywatch-retention") -> None:
        self.store = store
        self.interval_s = interval_s
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.store.apply_retention(time.time_ns() // 1_000_000)
            except Exception as exc:  # a store that is down now is swept next time
                log.warning("retention sweep failed: %s", exc)
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
