"""From one MQTT message to accepted events and dead letters: size check, routing, decoding, registry.

Errors are data: `handle` never raises, every rejected input comes back as a DeadLetter with a reason,
so one bad message or one bad event in a batch never stops ingest.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from core.models import DeadLetter, Event
from core.settings import IngestSettings, TopicRoute
from ingest.attributes import attribute_error
from ingest.codecs.base import Codec, CodecError, payload_preview
from ingest.registry import DeviceRegistry

log = logging.getLogger(__name__)


class IngestReason(StrEnum):
    """Dead-letter reasons decided by the normalizer (codecs add their own, e.g. `malformed_json`)."""

    OVERSIZED = "oversized"
    UNKNOWN_TOPIC = "unknown_topic"
    UNKNOWN_DEVICE = "unknown_device"
    INACTIVE_DEVICE = "inactive_device"
    INVALID_FIELD = "invalid_field"  # a measurement of the wrong type or outside its physical range
    CODEC_CRASH = "codec_crash"  # a codec bug: raised something other than CodecError
    UNENCODABLE = "unencodable_event"  # accepted, but the bus could not encode it (a gap in the checks)


@dataclass(slots=True)
class IngestResult:
    events: list[Event] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


class TopicFilter:
    """An MQTT topic filter (`+` one level, `#` this level and everything below), compiled once.

    Follows MQTT 3.1.1 section 4.7: `sport/#` also matches `sport`; a filter starting with a wildcard does
    not match topics starting with `$` (such as `$SYS/...`).
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._regex = re.compile(_filter_regex(pattern), re.DOTALL)

    def matches(self, topic: str) -> bool:
        return self._regex.fullmatch(topic) is not None

    def __repr__(self) -> str:
        return f"TopicFilter({self.pattern!r})"


def _filter_regex(pattern: str) -> str:
    if not pattern:
        raise ValueError("an MQTT topic filter cannot be empty")
    levels = pattern.split("/")
    parts: list[str] = []
    for position, level in enumerate(levels):
        if level == "#":
            if position != len(levels) - 1:
                raise ValueError(f"topic filter {pattern!r}: '#' must be the last level")
            # `a/#` matches `a` itself too, hence the optional separator.
            parts.append("(?:/.*)?" if parts else ".*")
            break
        if "#" in level or ("+" in level and level != "+"):
            raise ValueError(f"topic filter {pattern!r}: wildcards must fill a whole level, got {level!r}")
        text = "[^/]*" if level == "+" else re.escape(level)
        parts.append(text if not parts else "/" + text)
    regex = "".join(parts)
    if levels[0] in ("+", "#"):
        regex = r"(?!\$)" + regex
    return regex


# Topics whose route is remembered; devices often publish on a topic of their own.
ROUTE_CACHE_TOPICS = 100_000
_UNSEEN = object()


@dataclass(frozen=True, slots=True)
class _Route:
    topic_filter: TopicFilter
    codec: Codec


class Normalizer:
    """Turns (topic, payload) into events for the bus and dead letters for the dead-letter store."""

    def __init__(
        self,
        settings: IngestSettings,
        max_payload_bytes: int,
        registry: DeviceRegistry,
        codecs: Mapping[str, Codec] | Callable[[TopicRoute], Codec],
        tagger: Callable[[Event], Event] | None = None,
    ) -> None:
        """`codecs`: codecs by name, or a factory building each route's codec (ingest/codecs/catalogue.py).
        `tagger` adds place tags (grid, district, department) to every accepted event."""
        routes: list[_Route] = []
        for route in settings.routes:
            if callable(codecs):
                codec: Codec | None = codecs(route)
            else:
                codec = codecs.get(route.codec)
            if codec is None:
                raise ValueError(f"route {route.pattern!r} names codec {route.codec!r}, which is not loaded")
            routes.append(_Route(TopicFilter(route.pattern), codec))
        self._tagger = tagger
        self._routes = routes
        self._max_payload_bytes = max_payload_bytes
        self._dead_letter_bytes = settings.dead_letter_payload_bytes
        self._accept_unknown_devices = settings.accept_unknown_devices
        self._registry = registry
        # Topic -> its route's codec (None: no route), so each topic is matched against the filters once
        # instead of on every message. Only the network thread writes it.
        self._routed: dict[str, Codec | None] = {}

    def route(self, topic: str) -> Codec | None:
        """The codec of the first route whose filter matches the topic."""
        known = self._routed.get(topic, _UNSEEN)
        if known is not _UNSEEN:
            return known  # type: ignore[return-value]  # a Codec or None: the sentinel is not stored
        codec = None
        for route in self._routes:
            if route.topic_filter.matches(topic):
                codec = route.codec
                break
        if len(self._routed) >= ROUTE_CACHE_TOPICS:
            self._routed.clear()  # topics come from devices: memory stays bounded, matching starts over
        self._routed[topic] = codec
        return codec

    def unencodable(self, topic: str, payload: bytes, received_time_ms: int, accepted: IngestResult,
                    why: str) -> IngestResult:
        """The message's events, which the bus could not encode, as one dead letter saying why."""
        letter = DeadLetter(
            reason=IngestReason.UNENCODABLE.value,
            detail=f"accepted as {len(accepted.events)} event(s), but the bus cannot carry {why}"[:500],
            topic=topic, payload=payload[: self._dead_letter_bytes], received_time_ms=received_time_ms,
            source=accepted.events[0].source if accepted.events else "",
        )
        return IngestResult(events=[], dead_letters=[*accepted.dead_letters, letter])

    def handle(self, topic: str, payload: bytes, received_time_ms: int) -> IngestResult:
        result = IngestResult()
        # Slicing returns the original object when it is short enough: at most one copy, shared by
        # every dead letter of this message.
        kept_payload = payload[: self._dead_letter_bytes]

        def reject(reason: str, detail: str, source: str = "") -> None:
            result.dead_letters.append(
                DeadLetter(
                    reason=str(reason),
                    detail=detail,
                    topic=topic,
                    payload=kept_payload,
                    received_time_ms=received_time_ms,
                    source=source,
                )
            )

        if len(payload) > self._max_payload_bytes:
            # Not decoded: a huge payload costs memory and CPU before it can even be rejected.
            reject(
                IngestReason.OVERSIZED,
                f"payload of {len(payload)} bytes exceeds the limit of {self._max_payload_bytes} bytes",
            )
            return result

        codec = self.route(topic)
        if codec is None:
            reject(IngestReason.UNKNOWN_TOPIC, f"no ingest route matches topic {topic!r}")
            return result

        try:
            events = codec.decode(topic, payload, received_time_ms)
        except CodecError as exc:
            reject(exc.reason, exc.detail, codec.name)
            return result
        except Exception as exc:
            log.exception(
                "codec %r crashed on topic %r; payload dead-lettered: %s",
                codec.name, topic, payload_preview(payload),
            )
            reject(IngestReason.CODEC_CRASH, f"codec {codec.name!r} raised {type(exc).__name__}: {exc}",
                   codec.name)
            return result

        for event in events:
            bad_attribute = attribute_error(event.attributes)
            if bad_attribute is not None:
                reject(IngestReason.INVALID_FIELD, f"{bad_attribute} (device {event.device_id!r}, event "
                       f"{event.event_id})", codec.name)
                continue
            device = self._registry.get(event.device_id)
            if device is None:
                if not self._accept_unknown_devices:
                    reject(
                        IngestReason.UNKNOWN_DEVICE,
                        f"device {event.device_id!r} is not registered (event {event.event_id}, "
                        f"kind {event.kind!r}, time {event.event_time_ms} ms)",
                        codec.name,
                    )
                    continue
                result.events.append(event if self._tagger is None else self._tagger(event))
                continue
            if not device.active:
                reject(IngestReason.INACTIVE_DEVICE,
                       f"device {event.device_id!r} is deactivated (event {event.event_id})", codec.name)
                continue
            enriched = self._registry.enrich(event)
            result.events.append(enriched if self._tagger is None else self._tagger(enriched))
        return result
