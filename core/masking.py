"""What a reader sees of personal data: plates and evidence links only with the `plates` scope.

Licence plates and links to evidence imagery (snapshots, clips) reach citywatch in camera events, are
copied into violations' evidence, and sit verbatim in rejected payloads. Each record type has a `Masker`
here that returns the record with every plate masked and every evidence link removed, and says whether
the original held any (a read of it unmasked is then audited). The stored records are never changed.

Which fields count: any key named like a plate (`plate`, `plates`, `license_plate` ...), the recognised
`name` of a face or plate recognition update, and any key that names a link (`url`, `*_url`, `*_urls`),
at any depth of attributes, details and JSON payloads; and any string value that is an http(s) link,
whatever its key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from core.models import DeadLetter, Event, Violation

# Keys whose value is (or, for Frigate's sub_label, may be) a plate read.
PLATE_KEYS = frozenset({
    "plate", "plates", "plate_number", "license_plate", "licence_plate", "recognized_license_plate",
    "sub_label",
})
# Kept for callers that name the violation detail keys; every key ending in _url or _urls counts as well.
# Frigate's tracked object updates name who or what was recognised in `name`: a person's name for a
# `face` update, a known plate's owner label for an `lpr` one. There (and only there) `name` is personal.
RECOGNITION_TYPES = frozenset({"face", "lpr"})
SENSITIVE_DETAIL_KEYS = frozenset({"plate", "plates", "snapshot_url", "clip_url", "image_url"})
_VISIBLE_PLATE_CHARS = 3
_LINK = re.compile(r"https?://\S+", re.IGNORECASE)
# A plate field inside text that is not JSON (a truncated or malformed payload): "plate": "粤B12345".
_QUOTED_PLATE = re.compile(
    r'("(?:' + "|".join(sorted(PLATE_KEYS)) + r')"\s*:\s*")([^"\\]*)(")', re.IGNORECASE
)
LINK_REMOVED = "[link removed]"

T = TypeVar("T")


def mask_plate(plate: str) -> str:
    """粤B12345 -> 粤B1****: region and first character stay, enough to tell plates apart in a list."""
    visible = plate[:_VISIBLE_PLATE_CHARS]
    return visible + "*" * max(1, len(plate) - len(visible))


def is_plate_key(key: str) -> bool:
    return key.lower() in PLATE_KEYS


def is_link_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in ("url", "urls") or lowered.endswith(("_url", "_urls"))


def _is_link(value: str) -> bool:
    return value[:8].lower().startswith(("http://", "https://"))


def _masked_plates(value: Any) -> Any:
    if isinstance(value, str):
        return None if _is_link(value) else (mask_plate(value) if value else value)
    if isinstance(value, list):
        return [_masked_plates(item) for item in value]
    return None


def mask_data(value: Any) -> tuple[Any, bool]:
    """JSON-like data with plates masked and links removed, and whether the original held any."""
    if isinstance(value, dict):
        found = False
        out: dict[Any, Any] = {}
        recognition = value.get("type") in RECOGNITION_TYPES
        for key, item in value.items():
            if isinstance(key, str) and (is_plate_key(key) or (recognition and key == "name")):
                masked = _masked_plates(item)
                found |= masked != item
            elif isinstance(key, str) and is_link_key(key):
                masked = None
                found |= item is not None
            else:
                masked, inner = mask_data(item)
                found |= inner
            out[key] = masked
        return out, found
    if isinstance(value, list):
        items = [mask_data(item) for item in value]
        return [masked for masked, _ in items], any(found for _, found in items)
    if isinstance(value, str) and _is_link(value):
        return None, True
    return value, False


def mask_text(text: str) -> tuple[str, bool]:
    """Free text (a payload that is not JSON, an error detail) with links and quoted plate fields masked.
    A plate written in prose cannot be recognised; JSON payloads go through `mask_data` instead."""
    without_links = _LINK.sub(LINK_REMOVED, text)
    masked = _QUOTED_PLATE.sub(
        lambda m: m.group(1) + (mask_plate(m.group(2)) if m.group(2) else "") + m.group(3), without_links)
    return masked, masked != text


def _mask_violation(violation: Violation) -> tuple[Violation, bool]:
    evidence = violation.evidence
    details, in_details = mask_data(evidence.details)
    plate = mask_plate(evidence.plate) if evidence.plate else evidence.plate
    found = plate != evidence.plate or evidence.snapshot_url is not None or in_details
    if not found:
        return violation, False
    masked_evidence = msgspec.structs.replace(evidence, plate=plate, snapshot_url=None, details=details)
    return msgspec.structs.replace(violation, evidence=masked_evidence), True


def _mask_event(event: Event) -> tuple[Event, bool]:
    attributes, found = mask_data(event.attributes)
    return (msgspec.structs.replace(event, attributes=attributes), True) if found else (event, False)


def _mask_payload(payload: bytes) -> tuple[bytes, bool]:
    try:
        parsed = json.loads(payload)
    except ValueError:  # not JSON (malformed, truncated, binary): mask what can be recognised in the text
        text, found = mask_text(payload.decode("utf-8", errors="replace"))
        return (text.encode(), True) if found else (payload, False)
    masked, found = mask_data(parsed)
    return (json.dumps(masked, ensure_ascii=False).encode(), True) if found else (payload, False)


def _mask_dead_letter(letter: DeadLetter) -> tuple[DeadLetter, bool]:
    payload, in_payload = _mask_payload(letter.payload)
    detail, in_detail = mask_text(letter.detail)
    if not (in_payload or in_detail):
        return letter, False
    # The id is kept: it names the stored dead letter, not the masked copy.
    return DeadLetter(reason=letter.reason, detail=detail, topic=letter.topic, payload=payload,
                      received_time_ms=letter.received_time_ms, source=letter.source,
                      dead_letter_id=letter.dead_letter_id), True


@dataclass(frozen=True)
class Masker(Generic[T]):
    """How one record type is masked, and what an audit record calls it."""

    name: str
    identify: Callable[[T], str]
    mask: Callable[[T], tuple[T, bool]]


VIOLATIONS: Masker[Violation] = Masker("violations", lambda v: v.violation_id, _mask_violation)
EVENTS: Masker[Event] = Masker("events", lambda e: e.event_id, _mask_event)
DEAD_LETTERS: Masker[DeadLetter] = Masker("dead letters", lambda d: d.dead_letter_id, _mask_dead_letter)


def discloses(violation: Violation) -> bool:
    """Whether the unmasked violation carries a plate or an evidence link (an audited read)."""
    return _mask_violation(violation)[1]


def masked_violation(violation: Violation) -> Violation:
    """The violation with its plate masked and its evidence links removed."""
    return _mask_violation(violation)[0]


def present_violation(violation: Violation, *, plates: bool) -> dict[str, Any]:
    """The violation as JSON-ready builtins, masked unless the reader holds the plates scope."""
    data: dict[str, Any] = msgspec.to_builtins(violation if plates else masked_violation(violation))
    return data
