"""Refusing what a client misspelt, with the name it most likely meant.

A misspelt key in a subscription body (`"filtr"`) or a misspelt violation type in a filter would
otherwise be ignored or match nothing, silently: a subscription to everything, or to nothing. Every
body and filter of the alerts API refuses unknown names instead, and says which valid name is closest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from api.strict_input import closest


def unknown_name(what: str, name: str, valid: Iterable[str]) -> str:
    """`unknown field 'filtr'; did you mean 'filter'? (valid: ...)`"""
    options = sorted(valid)
    guess = closest(name, options)
    hint = f"; did you mean {guess!r}?" if guess else ""
    return f"unknown {what} {name!r}{hint} (valid: {', '.join(options)})"


class StrictModel(BaseModel):
    """A request body that refuses unknown keys, naming the closest known one."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [key for key in data if key not in cls.model_fields]
            if unknown:
                raise ValueError("; ".join(unknown_name("field", str(key), cls.model_fields)
                                           for key in unknown))
        return data
