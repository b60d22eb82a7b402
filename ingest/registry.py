"""The device registry: which devices may send, and what ingest adds to their events (position, tags)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import msgspec

from core.models import Event, Location
from core.settings import DeviceSettings


@dataclass(frozen=True, slots=True)
class _Entry:
    settings: DeviceSettings
    # Built once per device, not once per event: enrich() runs on the hot path.
    location: Location | None


class DeviceRegistry:
    """Devices by id. Reads take no lock (one dict lookup); upsert and deactivate serialise writers.

    Readers never see a half-updated entry: an entry is immutable and replaced by one dict assignment,
    which is atomic in CPython.
    """

    def __init__(self, devices: Iterable[DeviceSettings] = ()) -> None:
        self._entries: dict[str, _Entry] = {}
        self._write_lock = threading.Lock()
        self._watchers: list[Callable[[str, DeviceSettings | None], None]] = []
        for device in devices:
            if device.device_id in self._entries:
                raise ValueError(f"device {device.device_id!r} is registered twice")
            self._entries[device.device_id] = _entry(device)

    def get(self, device_id: str) -> DeviceSettings | None:
        entry = self._entries.get(device_id)
        return None if entry is None else entry.settings

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def devices(self) -> list[DeviceSettings]:
        """Every registered device's settings, now."""
        return [entry.settings for entry in list(self._entries.values())]

    @contextmanager
    def held(self) -> Iterator[list[DeviceSettings]]:
        """Every registered device's settings, with changes held back until the block ends: a copy made
        from them elsewhere (citywatch/ingest_process.py) is then in place before a watcher is told of the
        next change."""
        with self._write_lock:
            yield self.devices()

    def watch(self, watcher: Callable[[str, DeviceSettings | None], None]) -> None:
        """Call `watcher(device_id, settings)` for every device registered or changed from now on, and
        `watcher(device_id, None)` for every one removed (a copy of the registry in another process
        follows this one: citywatch/ingest_process.py)."""
        self._watchers.append(watcher)

    def upsert(self, device: DeviceSettings) -> None:
        """Register a device or replace its settings."""
        with self._write_lock:
            self._entries[device.device_id] = _entry(device)
            for watcher in self._watchers:
                watcher(device.device_id, device)

    def deactivate(self, device_id: str) -> bool:
        """Remove a device: its later events are dead-lettered as unknown. False if it was not registered."""
        with self._write_lock:
            removed = self._entries.pop(device_id, None) is not None
            if removed:
                for watcher in self._watchers:
                    watcher(device_id, None)
            return removed

    def enrich(self, event: Event) -> Event:
        """Add the device's position (when the event has none) and its tags (the event's own tags win)."""
        entry = self._entries.get(event.device_id)
        if entry is None:
            return event
        changes: dict[str, object] = {}
        if event.location is None and entry.location is not None:
            changes["location"] = entry.location
        device_tags = entry.settings.tags
        if device_tags:
            merged = {**device_tags, **event.tags}
            if merged != event.tags:
                changes["tags"] = merged
        return msgspec.structs.replace(event, **changes) if changes else event


def _entry(device: DeviceSettings) -> _Entry:
    location = None
    if device.lat is not None and device.lon is not None:
        location = Location(lat=device.lat, lon=device.lon)
    return _Entry(settings=device, location=location)
