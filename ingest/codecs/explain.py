"""Why a payload does not fit a msgspec struct, in citywatch's own words.

msgspec decodes and validates in one fast pass, but its error is a sentence for programmers whose
wording changes between releases. On the error path only, the payload is decoded again untyped and
walked against the same struct types here, so the dead-letter reason (missing, unknown or invalid
field) and its detail come from the schema itself, never from reading msgspec's message.
"""

from __future__ import annotations

import difflib
import math
import types
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

import msgspec

from ingest.codecs.base import CodecError

MALFORMED_JSON = "malformed_json"
MISSING_FIELD = "missing_field"
UNKNOWN_FIELD = "unknown_field"
INVALID_FIELD = "invalid_field"
_PREVIEW_CHARS = 60
_NONE = type(None)


class OutOfRange(str):
    """A JSON number too large for a float (1e400), kept as its text so the walk can name it."""


def _number(text: str) -> float | OutOfRange:
    number = float(text)
    return number if math.isfinite(number) else OutOfRange(text)


# Untyped decode for the walk: a number beyond a float's range is valid JSON that msgspec refuses,
# so it is kept as text and reported as the field's problem instead of as malformed JSON.
_UNTYPED = msgspec.json.Decoder(float_hook=_number)


class Mismatch(NamedTuple):
    """The first place, in document order, where a value departs from its type."""

    reason: str
    path: str  # `[1].location.lat`; empty for the payload itself
    message: str  # what is wrong there, e.g. "required field is missing"


def malformed(payload: bytes, decode_error: Exception) -> CodecError:
    """A payload the JSON decoder refused: say whether it is not UTF-8, empty, or not JSON."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = max(exc.start - 10, 0)
        return CodecError(MALFORMED_JSON, f"payload: not valid UTF-8 (byte {exc.start}, near "
                                          f"{payload[start:exc.start + 10]!r})")
    if not payload.strip():
        return CodecError(MALFORMED_JSON, "payload: empty, expected JSON")
    if isinstance(decode_error, RecursionError):
        return CodecError(MALFORMED_JSON, "payload: JSON is nested too deeply")
    # The decoder's own words only as a hint after citywatch's: no decision is taken on them.
    return CodecError(MALFORMED_JSON, f"payload: not valid JSON ({preview(str(decode_error))})")


def explain(struct_type: Any, payload: bytes, field_rules: dict[str, str] | None = None) -> CodecError:
    """The CodecError for a payload that msgspec refused to decode as `struct_type`.

    `field_rules` replaces the generated description of what a field expects, by field name (its last
    path step), with words chosen for the people who write the payloads.
    """
    try:
        value = _UNTYPED.decode(payload)
    except (msgspec.DecodeError, RecursionError) as exc:
        return malformed(payload, exc)
    found = mismatch(struct_type, value)
    if found is None:
        # The walk below covers every type the codecs' structs use; reaching here means a struct grew
        # a type it does not know. Still a refusal, never an acceptance.
        return CodecError(INVALID_FIELD, "payload: does not match the format")
    reason, path, message = found
    rules = field_rules or {}
    last = path.rsplit(".", 1)[-1]
    if reason == INVALID_FIELD and last in rules:
        message = f"expected {rules[last]}, got {preview(_value_at(value, path))}"
    return CodecError(reason, f"{path or 'payload'}: {message}")


def mismatch(tp: Any, value: Any, path: str = "") -> Mismatch | None:
    """Where `value` (untyped JSON) departs from `tp`, or None if it fits."""
    tp, metas = _unwrap(tp)
    if isinstance(value, OutOfRange):
        return Mismatch(INVALID_FIELD, path, f"number {value} is out of range")
    if tp is Any:
        return _out_of_range_inside(value, path)
    if _is_union(tp):
        return _union_mismatch(tp, value, path)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _struct_mismatch(tp, value, path)
    origin = get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            return _invalid(tp, metas, value, path)
        (item_type,) = get_args(tp)
        for index, item in enumerate(value):
            found = mismatch(item_type, item, f"{path}[{index}]")
            if found is not None:
                return found
        return _leaf_mismatch(tp, metas, value, path)
    if origin is dict:
        if not isinstance(value, dict):
            return _invalid(tp, metas, value, path)
        return _out_of_range_inside(value, path)
    return _leaf_mismatch(tp, metas, value, path)


def describe(tp: Any) -> str:
    """What a type accepts, in words: "a number between -90.0 and 90.0", "an object or null"."""
    tp, metas = _unwrap(tp)
    if _is_union(tp):
        members = [describe(member) for member in get_args(tp) if member is not _NONE]
        return " or ".join(members) + (" or null" if _NONE in get_args(tp) else "")
    if tp is _NONE:
        return "null"
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return "an object"
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in get_args(tp))
    words = {list: "an array", dict: "an object"}.get(origin) or {
        bool: "true or false", int: "an integer", float: "a number", str: "a string",
        datetime: "an RFC 3339 date-time",
    }.get(tp, "a value of another type")
    return words + _constraints(metas, "items" if origin is list else "characters")


def preview(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= _PREVIEW_CHARS else shown[:_PREVIEW_CHARS] + "..."


def _struct_mismatch(tp: type[msgspec.Struct], value: Any, path: str) -> Mismatch | None:
    if not isinstance(value, dict):
        return Mismatch(INVALID_FIELD, path, f"expected an object, got {preview(value)}")
    fields = {field.encode_name: field for field in msgspec.structs.fields(tp)}
    forbid_unknown = tp.__struct_config__.forbid_unknown_fields
    for key, item in value.items():  # document order, as a reader of the payload would look
        field = fields.get(key)
        if field is None:
            if not forbid_unknown:
                continue
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(fields)})"
            return Mismatch(UNKNOWN_FIELD, _join(path, key), f"unknown field{hint}")
        found = mismatch(field.type, item, _join(path, key))
        if found is not None:
            return found
    for name, field in fields.items():
        if field.required and name not in value:
            return Mismatch(MISSING_FIELD, _join(path, name), "required field is missing")
    return None


def _union_mismatch(tp: Any, value: Any, path: str) -> Mismatch | None:
    members = get_args(tp)
    if value is None and _NONE in members:
        return None
    shaped = [member for member in members if member is not _NONE and _same_shape(member, value)]
    # One member of the value's JSON shape (an object for a struct, an array for a list): its own
    # mismatch is the precise one ("location.lat: required field is missing").
    if len(shaped) == 1:
        return mismatch(shaped[0], value, path)
    if any(mismatch(member, value, path) is None for member in shaped):
        return None
    return Mismatch(INVALID_FIELD, path, f"expected {describe(tp)}, got {preview(value)}")


def _leaf_mismatch(tp: Any, metas: tuple[Any, ...], value: Any, path: str) -> Mismatch | None:
    # msgspec.convert answers only "fits or not" here; what is said about it is built from the type.
    target = Annotated[tp, *metas] if metas else tp
    try:
        msgspec.convert(value, target)
    except (msgspec.ValidationError, TypeError, ValueError, OverflowError):
        return _invalid(tp, metas, value, path)
    return None


def _out_of_range_inside(value: Any, path: str) -> Mismatch | None:
    """The first number too large for a float anywhere inside free-form JSON (attributes)."""
    if isinstance(value, OutOfRange):
        return Mismatch(INVALID_FIELD, path, f"number {value} is out of range")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _out_of_range_inside(item, f"{path}[{key}]" if isinstance(key, int) else _join(path, key))
        if found is not None:
            return found
    return None


def _invalid(tp: Any, metas: tuple[Any, ...], value: Any, path: str) -> Mismatch:
    expected = describe(Annotated[tp, *metas]) if metas else describe(tp)
    return Mismatch(INVALID_FIELD, path, f"expected {expected}, got {preview(value)}")


def _same_shape(tp: Any, value: Any) -> bool:
    tp, _ = _unwrap(tp)
    if (isinstance(tp, type) and issubclass(tp, msgspec.Struct)) or get_origin(tp) is dict:
        return isinstance(value, dict)
    if get_origin(tp) is list:
        return isinstance(value, list)
    return not isinstance(value, dict | list)


def _constraints(metas: tuple[Any, ...], unit: str) -> str:
    words = []
    for meta in metas:
        low = meta.ge if meta.ge is not None else meta.gt
        high = meta.le if meta.le is not None else meta.lt
        if low is not None and high is not None:
            words.append(f"between {low} and {high}")
        elif low is not None:
            words.append(f"{'at least' if meta.ge is not None else 'greater than'} {low}")
        elif high is not None:
            words.append(f"{'at most' if meta.le is not None else 'less than'} {high}")
        if meta.min_length is not None or meta.max_length is not None:
            low_length = meta.min_length or 0
            high_length = "" if meta.max_length is None else meta.max_length
            words.append(f"of {low_length}..{high_length} {unit}")
        if meta.pattern is not None:
            words.append(f"matching {meta.pattern}")
    return "".join(f" {word}" for word in words)


def _unwrap(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    """Annotated[T, Meta(...)] -> (T, (Meta(...),)); other types pass through."""
    metas: tuple[Any, ...] = ()
    while get_origin(tp) is Annotated:
        tp, *extra = get_args(tp)
        metas += tuple(meta for meta in extra if isinstance(meta, msgspec.Meta))
    return tp, metas


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _value_at(value: Any, path: str) -> Any:
    node = value
    for step in path.replace("[", ".[").split("."):
        if not step:
            continue
        node = node[int(step[1:-1])] if step.startswith("[") else node[step]
    return node
