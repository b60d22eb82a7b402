"""The device registry as something people manage: persisted, changed through the API, seen by ingest at once.

Devices live in a table: `devices.sqlite` in the data directory by default, or the PostgreSQL database the
api replicas share (`relational.kind`, store/relational.py). At start
the devices of configs/ seed it: a device that came from the configuration is refreshed from it on every
start, so editing devices.yaml still works; a device created or changed through the API is marked as
such and the configuration no longer overwrites it (the operator's later decision wins).

Every change is written to the table first and then put into the live DeviceRegistry, which ingest and
the rules read without a lock, so the next message already sees it. Deactivation keeps the device
(its history stays attributable) and makes ingest dead-letter its messages as `inactive_device`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import Final

from core.settings import DeviceSettings, RelationalSettings
from ingest.registry import DeviceRegistry
from store.relational import Database, Schema, open_database

DB_FILE = "devices.sqlite"
SCHEMA: Final = Schema(
    "devices",
    sqlite="CREATE TABLE IF NOT EXISTS devices (device_id TEXT PRIMARY KEY, settings TEXT NOT NULL, "
           "origin TEXT NOT NULL, updated_ms INTEGER NOT NULL)",
    postgresql="CREATE TABLE IF NOT EXISTS devices (device_id TEXT PRIMARY KEY, settings TEXT NOT NULL, "
               "origin TEXT NOT NULL, updated_ms BIGINT NOT NULL)",
)


class DeviceOrigin(StrEnum):
    CONFIG = "config"
    API = "api"


class DeviceExists(ValueError):
    """Create was asked for an id that is already registered."""


class DeviceNotFound(KeyError):
    """No device with that id."""


class DeviceChangeNotSent(RuntimeError):
    """The change could not be handed to the other roles (Kafka set-up); nothing was stored."""


class DeviceStore:
    """The devices table: one JSON document per device (the DeviceSettings), its origin and change time."""

    def __init__(self, database: Database) -> None:
        self._db = database

    @classmethod
    def open(cls, data_dir: Path, settings: RelationalSettings | None = None) -> DeviceStore:
        """`data_dir/devices.sqlite`, or the PostgreSQL database when the settings say so."""
        return cls(open_database(settings or RelationalSettings(), data_dir, DB_FILE, SCHEMA))

    def all(self) -> list[tuple[DeviceSettings, DeviceOrigin]]:
        rows = self._db.execute("SELECT settings, origin FROM devices ORDER BY device_id").rows
        return [
            (DeviceSettings.model_validate_json(settings), DeviceOrigin(origin)) for settings, origin in rows
        ]

    def put(self, device: DeviceSettings, origin: DeviceOrigin) -> None:
        self._db.execute(
            "INSERT INTO devices (device_id, settings, origin, updated_ms) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(device_id) DO UPDATE SET settings=excluded.settings, origin=excluded.origin, "
            "updated_ms=excluded.updated_ms",
            (device.device_id, device.model_dump_json(), origin.value, time.time_ns() // 1_000_000),
        )

    def close(self) -> None:
        self._db.close()


class DeviceManager:
    """List, get, create, update, deactivate: persisted first, then live in the registry."""

    def __init__(self, store: DeviceStore, registry: DeviceRegistry,
                 publish: Callable[[DeviceSettings], None] | None = None) -> None:
        self._store = store
        self._registry = registry
        # The Kafka set-up: tells the other roles (ingest/device_sync.py); raises if it could not.
        self._publish = publish
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceSettings] = {}

    @classmethod
    def open(cls, data_dir: Path, registry: DeviceRegistry, seed: Iterable[DeviceSettings],
             publish: Callable[[DeviceSettings], None] | None = None,
             relational: RelationalSettings | None = None) -> DeviceManager:
        """`relational`: where the table lives (default: `data_dir/devices.sqlite`)."""
        store = DeviceStore.open(data_dir, relational)
        manager = cls(store, registry, publish)
        try:
            manager.seed(seed)
        except BaseException:
            store.close()
            raise
        return manager

    def seed(self, config_devices: Iterable[DeviceSettings]) -> None:
        """Load the table, refresh config-origin devices from the configuration (deactivating those it no
        longer lists), fill the registry."""
        with self._lock:
            stored = {device.device_id: (device, origin) for device, origin in self._store.all()}
            config_ids = set()
            for device in config_devices:
                config_ids.add(device.device_id)
                known = stored.get(device.device_id)
                if known is None or known[1] is DeviceOrigin.CONFIG:
                    if known is None or known[0] != device:
                        self._store.put(device, DeviceOrigin.CONFIG)
                    stored[device.device_id] = (device, DeviceOrigin.CONFIG)
            for device_id, (device, origin) in list(stored.items()):
                if origin is DeviceOrigin.CONFIG and device_id not in config_ids and device.active:
                    # Removed from the configuration: deactivated, not forgotten (its history stays
                    # attributable and the API still shows it).
                    retired = device.model_copy(update={"active": False})
                    self._store.put(retired, DeviceOrigin.CONFIG)
                    stored[device_id] = (retired, origin)
            for device, _ in stored.values():
                self._devices[device.device_id] = device
                self._registry.upsert(device)

    def list(self, kind: str | None = None, active: bool | None = None) -> list[DeviceSettings]:
        with self._lock:
            devices = sorted(self._devices.values(), key=lambda device: device.device_id)
        return [
            d for d in devices if (kind is None or d.kind == kind) and (active is None or d.active == active)
        ]

    def get(self, device_id: str) -> DeviceSettings | None:
        return self._devices.get(device_id)

    def create(self, device: DeviceSettings) -> DeviceSettings:
        with self._lock:
            if device.device_id in self._devices:
                raise DeviceExists(f"device {device.device_id!r} is already registered")
            return self._save(device)

    def update(self, device_id: str, changes: dict[str, object]) -> DeviceSettings:
        """Apply field changes (validated like the configuration); the id cannot change."""
        with self._lock:
            current = self._devices.get(device_id)
            if current is None:
                raise DeviceNotFound(device_id)
            data = {**current.model_dump(), **changes, "device_id": device_id}
            # Raises pydantic's ValidationError naming the field; the API turns it into a 422.
            return self._save(DeviceSettings.model_validate(data))

    def deactivate(self, device_id: str) -> DeviceSettings:
        return self.update(device_id, {"active": False})

    def _save(self, device: DeviceSettings) -> DeviceSettings:
        if self._publish is not None:
            # First: a change the other roles never heard of must not be stored as made.
            try:
                self._publish(device)
            except Exception as exc:
                raise DeviceChangeNotSent(f"device {device.device_id!r} was not changed: {exc}") from exc
        self._store.put(device, DeviceOrigin.API)
        self._devices[device.device_id] = device
        self._registry.upsert(device)
        return device

    def apply(self, device: DeviceSettings) -> None:
        """A change made through another api replica (read back from the devices topic): shown here too.
        That replica stored it already (the replicas share the table)."""
        with self._lock:
            self._devices[device.device_id] = device
            self._registry.upsert(device)

    def close(self) -> None:
        self._store.close()
