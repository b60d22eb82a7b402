"""The violation types a filter may name: every rule's type, and the types of the violation code table
(smart cameras report those)."""

from __future__ import annotations

import functools

from core.traffic_settings import CodeTableSettings


def _rule_types() -> set[str]:
    import processors.catalogue  # noqa: F401 - imports every rule class
    from processors.rule import Rule

    found: set[str] = set()
    pending: list[type] = [Rule]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        name = getattr(cls, "name", None)
        if isinstance(name, str) and name:
            found.add(name)
    return found


def known_violation_types(codes: CodeTableSettings | None = None) -> frozenset[str]:
    """`codes`: the city's code table (`traffic.codes`); None: the default table."""
    if codes is None:
        return default_violation_types()
    return frozenset(_rule_types() | {name.split(":", 1)[0] for name in codes.codes})


@functools.cache
def default_violation_types() -> frozenset[str]:
    return known_violation_types(CodeTableSettings())
