"""What the traffic rules share: reading track and signal events, remembering tracks and phases, and
building a violation with the evidence an officer needs (events, track, plate, snapshot, zone, phase,
code and points of the configured code table).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

from core.models import Event, Evidence, Severity, Violation, stable_id
from core.traffic_settings import CodeEntry, TrafficSettings, ZoneType
from processors.devices import DeviceLookup, GroupedThresholds, Thresholds
from processors.rule import Rule, S
from processors.zones import Zone, ZoneMap


@dataclass
class TrafficContext:
    """Everything the traffic rules read besides events: zones, code table, how long a track lives."""

    zones: ZoneMap
    settings: TrafficSettings
    # The last event read as a track and the result: every traffic rule reads the same event in turn.
    _last_read: tuple[Event, Track | None] | None = None

    def track(self, event: Event) -> Track | None:
        """read_track, once per event however many rules ask."""
        last = self._last_read
        if last is not None and last[0] is event:
            return last[1]
        track = read_track(event)
        self._last_read = (event, track)
        return track

    @classmethod
    def build(cls, settings: TrafficSettings, devices: DeviceLookup | None = None,
              zone_thresholds: GroupedThresholds | None = None,
              kind_thresholds: GroupedThresholds | None = None) -> TrafficContext:
        """`zone_thresholds` and `kind_thresholds`: rules.zone_thresholds and rules.kind_thresholds."""
        thresholds = Thresholds(devices, zone_thresholds, kind_thresholds)
        return cls(ZoneMap(settings, devices, thresholds), settings)

    @property
    def track_idle_ms(self) -> int:
        return int(self.settings.track_idle_s * 1000)

    def code(self, violation_type: str, label: str | None = None) -> CodeEntry | None:
        codes = self.settings.codes.codes
        return (codes.get(f"{violation_type}:{label}") if label else None) or codes.get(violation_type)

    def code_details(self, violation_type: str, label: str | None = None) -> dict[str, Any]:
        entry = self.code(violation_type, label)
        table = self.settings.codes
        return {
            "code": entry.code if entry else None,
            "points": entry.points if entry else 0,
            "code_table": f"{table.province}/{table.version}",
        }


class Track(msgspec.Struct, frozen=True):
    """The attributes of a `track` event the rules read, with their types checked once."""

    device_id: str
    track_id: str
    stage: str
    label: str
    zones: list[str]
    stationary: bool
    position: tuple[float, float] | None
    speed_kmh: float | None
    helmet: bool | None
    plate: str | None
    snapshot_url: str | None
    clip_url: str | None

    @property
    def key(self) -> str:
        return f"{self.device_id}/{self.track_id}"

    @property
    def ended(self) -> bool:
        return self.stage == "end"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def read_track(event: Event) -> Track | None:
    """The track in a `track` event; None when it has no track id or label (nothing to judge)."""
    attributes = event.attributes
    track_id = attributes.get("track_id")
    label = _text(attributes.get("label"))
    if isinstance(track_id, int) and not isinstance(track_id, bool):
        track_id = str(track_id)
    if not isinstance(track_id, str) or not track_id or label is None:
        return None
    zones = attributes.get("zones")
    position = attributes.get("position")
    point = None
    if isinstance(position, list | tuple) and len(position) == 2:
        x, y = _number(position[0]), _number(position[1])
        point = None if x is None or y is None else (x, y)
    helmet = attributes.get("helmet")
    stage = attributes.get("stage")
    return Track(
        device_id=event.device_id, track_id=track_id,
        stage=stage if isinstance(stage, str) else "update",
        label=label,
        zones=[zone for zone in zones if isinstance(zone, str)] if isinstance(zones, list) else [],
        stationary=attributes.get("stationary") is True,
        position=point,
        speed_kmh=_number(attributes.get("speed_kmh")),
        helmet=helmet if isinstance(helmet, bool) else None,
        plate=_text(attributes.get("plate")),
        snapshot_url=_text(attributes.get("snapshot_url")),
        clip_url=_text(attributes.get("clip_url")),
    )


class TrackMemory(msgspec.Struct):
    """What a keyed state remembers of one track: its label, the zones it was in, what was judged."""

    label: str
    zones: list[str]
    last_ms: int
    last_event_id: str = ""
    # The latest plate read of the track (plates are often read on one message only).
    plate: str | None = None
    # Incidents already reported for this track (e.g. an approach or a crosswalk): one violation each.
    judged: list[str] = []
    # Incidents already counted in the rule's exposures (docs/denominators.md): one count each.
    counted: list[str] = []


class TrackBook(msgspec.Struct):
    """The tracks of one camera or intersection that are inside a zone the rule watches, or were already
    judged; idle tracks are dropped as time goes by.

    A track outside every watched zone is not remembered at all: whatever zone it shows up in next is a
    zone it entered, which is what forgetting it would conclude anyway. So the book holds the few tracks
    on stop lines or crosswalks right now, not every car the camera has seen in the idle time.
    """

    tracks: dict[str, TrackMemory] = {}
    pruned_ms: int = 0

    def observe(self, track: Track, event: Event, idle_ms: int,
                watched: frozenset[str]) -> tuple[TrackMemory, list[str]]:
        """Record the track's current watched zones; returns its memory and the zones it just entered.
        The rule may add to `memory.judged` when it judged the track (that keeps the memory)."""
        time_ms = event.event_time_ms
        self._prune(time_ms, idle_ms)
        zones = [zone for zone in track.zones if zone in watched]
        memory = self.tracks.get(track.key)
        if memory is None or memory.last_ms <= time_ms - idle_ms:  # silent too long: a new track
            memory = TrackMemory(track.label, [], time_ms)
        entered = [zone for zone in zones if zone not in memory.zones]
        memory.zones = zones
        memory.last_ms = time_ms
        memory.last_event_id = event.event_id
        memory.plate = track.plate or memory.plate
        if zones or memory.judged or memory.counted:
            self.tracks[track.key] = memory
        else:
            self.tracks.pop(track.key, None)
        return memory, entered

    def forget(self, track: Track) -> None:
        self.tracks.pop(track.key, None)

    def _prune(self, time_ms: int, idle_ms: int) -> None:
        # A sweep every half idle time keeps the cost per event O(1) on average while a track whose end
        # message was lost is gone at most 1.5 idle times after its last message.
        if time_ms - self.pruned_ms < idle_ms // 2:
            return
        self.pruned_ms = time_ms
        horizon = time_ms - idle_ms
        self.tracks = {key: memory for key, memory in self.tracks.items() if memory.last_ms > horizon}


class PhaseState(msgspec.Struct):
    state: str
    since_ms: int
    event_id: str
    device_id: str


def read_signal(event: Event) -> tuple[str, str] | None:
    """(phase, state) of a `signal` event, or None when either is missing."""
    phase = _text(event.attributes.get("phase"))
    state = _text(event.attributes.get("state"))
    if phase is None or state is None:
        return None
    return phase, state.lower()


def update_phase(phases: dict[str, PhaseState], event: Event) -> None:
    """Apply a signal change; a repeated state keeps the time the phase first took it."""
    signal = read_signal(event)
    if signal is None:
        return
    phase, state = signal
    current = phases.get(phase)
    if current is None or current.state != state:
        phases[phase] = PhaseState(state, event.event_time_ms, event.event_id, event.device_id)


def red_for_ms(phases: dict[str, PhaseState], phase: str | None, time_ms: int, stale_ms: int) -> int | None:
    """How long `phase` has been red at `time_ms`; None if it is not red or its state is unknown."""
    current = phases.get(phase) if phase else None
    if current is None or current.state != "red" or time_ms - current.since_ms > stale_ms:
        return None
    return time_ms - current.since_ms


def phase_known(phases: dict[str, PhaseState], phase: str | None, time_ms: int, stale_ms: int) -> bool:
    """Whether a track entering at `time_ms` can be judged against `phase`: its state is known, and a red
    is not stale (`red_for_ms` gives None for a stale red as for green)."""
    current = phases.get(phase) if phase else None
    return current is not None and (current.state != "red" or time_ms - current.since_ms <= stale_ms)


def phase_details(phases: dict[str, PhaseState], phase: str | None, time_ms: int) -> dict[str, Any]:
    current = phases.get(phase) if phase else None
    if current is None:
        return {"phase": phase, "state": None}
    return {"phase": phase, "state": current.state, "since_ms": current.since_ms,
            "for_ms": time_ms - current.since_ms, "signal_event_id": current.event_id,
            "controller": current.device_id}


def track_violation(context: TrafficContext, *, violation_type: str, severity: Severity, event: Event,
                    track: Track, zone: Zone | None, incident: str, start_time_ms: int,
                    event_ids: list[str], details: dict[str, Any],
                    code_type: str | None = None, plate: str | None = None,
                    detected_time_ms: int | None = None) -> Violation:
    """An open violation about a camera track, with its evidence; the id depends on the incident only.
    A re-issue of an open one passes on its `detected_time_ms` (else the emitter sets it)."""
    return Violation(
        violation_id=stable_id(violation_type, track.device_id, track.track_id, incident),
        type=violation_type,
        severity=severity,
        device_id=track.device_id,
        start_time_ms=start_time_ms,
        updated_time_ms=event.event_time_ms,
        detected_time_ms=detected_time_ms,
        location=event.location,
        tags=event.tags,
        evidence=Evidence(
            event_ids=list(dict.fromkeys(event_ids)),
            snapshot_url=track.snapshot_url or track.clip_url,
            plate=track.plate or plate,
            details={
                "track_id": track.track_id,
                "label": track.label,
                "zone": zone.name if zone else None,
                "zone_type": zone.type.value if zone else None,
                "intersection": zone.intersection if zone else context.zones.intersection_of(track.device_id),
                "clip_url": track.clip_url,
                **context.code_details(code_type or violation_type, track.label),
                **details,
            },
        ),
    )


class TrackRule(Rule[S]):
    """A rule judged per camera track: state keyed by camera and track id, kept as long as a track may
    stay silent before it counts as ended."""

    kinds: ClassVar[frozenset[str]] = frozenset({"track"})
    # Only cameras with a zone of this type are judged (None: every camera, see `judges`).
    zone_type: ClassVar[ZoneType | None] = None

    def __init__(self, labels: Iterable[str], context: TrafficContext) -> None:
        self.context = context
        self.labels = frozenset(labels)
        self.state_ttl_ms = context.track_idle_ms

    def judges(self, event: Event) -> bool:
        return self.zone_type is None or self.context.zones.has_zone_type(event.device_id, self.zone_type)

    def key_of(self, event: Event) -> str | None:
        track_id = event.attributes.get("track_id")
        if track_id is None or not self.judges(event):
            return None
        return f"{event.device_id}/{track_id}"
