"""What a key sees of a violation: plates and evidence links only with the `plates` scope."""

from __future__ import annotations

from typing import Any

import msgspec

from citywatch.models import Violation

# Evidence detail keys that can identify a vehicle or lead to imagery, masked like the plate itself.
SENSITIVE_DETAIL_KEYS = frozenset({"plate", "plates", "snapshot_url", "clip_url", "image_url"})
_VISIBLE_PLATE_CHARS = 3


def mask_plate(plate: str) -> str:
    """粤B12345 -> 粤B1****: region and first character stay, enough to tell plates apart in a list."""
    visible = plate[:_VISIBLE_PLATE_CHARS]
    return visible + "*" * max(1, len(plate) - len(visible))


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_plate(value) if value and not value.startswith(("http:", "https:")) else None
    if isinstance(value, list):
        return [_mask_value(item) for item in value]
    return None


def discloses(violation: Violation) -> bool:
    """Whether the unmasked violation carries a plate or an evidence link (an audited read)."""
    evidence = violation.evidence
    return bool(evidence.plate or evidence.snapshot_url
                or SENSITIVE_DETAIL_KEYS.intersection(evidence.details))


def masked_violation(violation: Violation) -> Violation:
    """The violation with its plate masked and its evidence links removed."""
    if not discloses(violation):
        return violation
    evidence = violation.evidence
    return msgspec.structs.replace(violation, evidence=msgspec.structs.replace(
        evidence,
        plate=mask_plate(evidence.plate) if evidence.plate else evidence.plate,
        snapshot_url=None,
        details={key: (_mask_value(value) if key in SENSITIVE_DETAIL_KEYS else value)
                 for key, value in evidence.details.items()},
    ))


def present_violation(violation: Violation, *, plates: bool) -> dict[str, Any]:
    """The violation as JSON-ready builtins, masked unless the reader holds the plates scope."""
    data: dict[str, Any] = msgspec.to_builtins(violation if plates else masked_violation(violation))
    return data
