"""The environment layer of the configuration: `CITYWATCH_<SECTION>__<KEY>` variables and `<VAR>_FILE`
secret files, over the YAML file, which is over the defaults.

Containers are configured this way: the same image and file everywhere, the host names and the secrets
from the orchestrator (compose `secrets:`, Kubernetes Secrets mounted as files). The rules are those of
the YAML file: a variable that names no key is an error, as an unknown key is, and a secret's value is
never part of a message (docs/configuration.md).

This module knows the settings only as a tree of pydantic models; `load_settings` applies what it reads.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from core.redaction import redact_urls

ENV_PREFIX: Final = "CITYWATCH_"
NESTING: Final = "__"
FILE_SUFFIX: Final = "_FILE"
MASK: Final = "**********"  # as pydantic shows a SecretStr
# Variables with the prefix that are not configuration keys, and who reads them.
NOT_CONFIGURATION: Final = {
    "CITYWATCH_CONFIG": "the configuration file of every command when --config is not given",
    "CITYWATCH_DATA_DIR": "deploy/scripts/compose-first-admin-key.sh (the api's data volume)",
    "CITYWATCH_UID": "deploy/scripts/compose-mqtt-secrets.sh (the owner of ingest's certificates)",
}
_COLLECTIONS: Final = (list, tuple, set, frozenset, dict)


class EnvironmentConfigError(Exception):
    """A variable cannot be used; the message names it (and a file's path), never its value."""


@dataclass(frozen=True)
class EnvValue:
    """One configuration key set from the environment."""

    key: tuple[str, ...]  # the field path, ("mqtt", "password")
    variable: str  # the variable that set it: CITYWATCH_MQTT__PASSWORD or CITYWATCH_MQTT__PASSWORD_FILE
    file: Path | None  # the file the value was read from (the _FILE form)
    value: Any  # what validation receives: text, or decoded JSON for lists and mappings

    @property
    def dotted(self) -> str:
        return ".".join(self.key)

    @property
    def origin(self) -> str:
        return self.variable if self.file is None else f"file {self.file} ({self.variable})"


def variable_name(key: tuple[str, ...]) -> str:
    """("store", "influxdb", "token") -> CITYWATCH_STORE__INFLUXDB__TOKEN."""
    return ENV_PREFIX + NESTING.join(part.upper() for part in key)


def config_keys(model: type[BaseModel]) -> dict[str, tuple[str, ...]]:
    """Every variable that sets a key of `model`, with that key's path. Sections are not keys: their
    keys are set one by one; lists and mappings are keys (their value is JSON)."""
    return {variable_name(key): key for key, _ in _leaves(model, ())}


def read_environment(model: type[BaseModel], environ: Mapping[str, str]) -> list[EnvValue]:
    """The keys `environ` sets, in variable order. Refuses a variable that names no key (with the closest
    one), a key set twice (as a variable and as a file), and a file that cannot be read. Names are
    compared in upper case, as pydantic-settings and most tools do."""
    keys = config_keys(model)
    fields = {key: field for key, field in _leaves(model, ())}
    set_by: dict[tuple[str, ...], tuple[str, bool]] = {}  # key -> (variable, through a file)
    values: list[EnvValue] = []
    for variable in sorted(name for name in environ if name.startswith(ENV_PREFIX)):
        if variable in NOT_CONFIGURATION:
            continue
        name = variable.upper()
        if name in keys:
            # An exact key wins over the file form: devices_file and tls.ca_file end in _FILE themselves.
            key, file = keys[name], None
        elif name.endswith(FILE_SUFFIX) and name.removesuffix(FILE_SUFFIX) in keys:
            key, file = keys[name.removesuffix(FILE_SUFFIX)], Path(environ[variable])
        else:
            raise EnvironmentConfigError(_unknown_variable(variable, model, keys))
        if key in set_by:  # checked before a file is read: the conflict is the message, not the file
            earlier, earlier_file = set_by[key]
            how = ", in the variable or in the file" if file is not None or earlier_file else ""
            raise EnvironmentConfigError(f"{earlier} and {variable} both set {'.'.join(key)}: give the "
                                         f"value once{how}")
        set_by[key] = (variable, file is not None)
        text = environ[variable] if file is None else _read_secret_file(variable, file)
        values.append(EnvValue(key, variable, file, _decode(fields[key], text, variable)))
    return values


def apply(raw: dict[str, Any], values: list[EnvValue]) -> dict[str, Any]:
    """A copy of the file's mapping with each value set at its key (the environment wins)."""
    merged = _copy_mappings(raw)
    for item in values:
        node = merged
        for depth, part in enumerate(item.key[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(item.key[: depth + 1])
                raise EnvironmentConfigError(f"{item.variable}: {where} in the configuration file is not a "
                                             "mapping, so no key can be set in it")
            node = child
        node[item.key[-1]] = item.value
    return merged


def describe(settings: BaseModel, values: list[EnvValue]) -> list[str]:
    """One line per key set from the environment: its effective value (secrets as **********, URLs
    without credentials) and where it came from. Never a secret, never a file's content."""
    lines = []
    for item in values:
        if item.file is not None:
            # Whatever the key: a value kept in a file was put there to stay out of sight.
            lines.append(f'  {item.dotted} = "{MASK}"  <- {item.origin}')
            continue
        parent = settings
        for part in item.key[:-1]:
            parent = getattr(parent, part)
        # The field's own JSON form: a SecretStr dumps as **********, also inside lists and mappings.
        value = parent.model_dump(mode="json", include={item.key[-1]})[item.key[-1]]
        shown = redact_urls(json.dumps(value, ensure_ascii=False))
        lines.append(f"  {item.dotted} = {shown}  <- {item.origin}")
    return lines


def annotate(dotted_location: str, values: list[EnvValue]) -> str:
    """`dotted_location` of a validation error, with the variables that set it or a key inside it."""
    related = [item.variable for item in values
               if _within(item.dotted, dotted_location) or _within(dotted_location, item.dotted)]
    return f"{dotted_location} (set by {', '.join(related)})" if related else dotted_location


def _within(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer + ".")


def _leaves(model: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    for name, field in model.model_fields.items():
        if _is_model(field.annotation):
            assert isinstance(field.annotation, type)
            yield from _leaves(field.annotation, (*prefix, name))
        else:
            yield (*prefix, name), field


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _unknown_variable(variable: str, model: type[BaseModel], keys: Mapping[str, tuple[str, ...]]) -> str:
    name = variable.upper()
    parts = name.removeprefix(ENV_PREFIX).lower().split(NESTING)
    section = section_at(model, parts)
    if section is not None:
        example = variable_name((*parts, next(iter(section.model_fields))))
        return (f"{variable}: {'.'.join(parts)} is a section, not a key: set its keys one by one "
                f"(e.g. {example})")
    inside = next((parts[:depth] for depth in range(1, len(parts))
                   if variable_name(tuple(parts[:depth])) in keys), None)
    if inside is not None:
        whole = variable_name(tuple(inside))
        return f"{variable}: {'.'.join(inside)} is set as a whole, in JSON: {whole}"
    # Compared without the prefix, which every name shares and which would make any two names look alike.
    candidates = [name.removeprefix(ENV_PREFIX) for key in keys for name in (key, key + FILE_SUFFIX)]
    closest = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), candidates, n=1, cutoff=0.6)
    hint = f"did you mean {ENV_PREFIX}{closest[0]}?" if closest else "docs/configuration.md lists the rules"
    return (f"{variable} names no configuration key ({hint}); variables starting with {ENV_PREFIX} are "
            f"configuration, except {', '.join(NOT_CONFIGURATION)}")


def section_at(model: type[BaseModel], parts: list[str]) -> type[BaseModel] | None:
    """The model at `parts`, if the path names a section (the settings' own loader uses it too, for the
    keys a section takes)."""
    node: type[BaseModel] = model
    for part in parts:
        field = node.model_fields.get(part)
        if field is None or not _is_model(field.annotation):
            return None
        assert isinstance(field.annotation, type)
        node = field.annotation
    return node


def _read_secret_file(variable: str, path: Path) -> str:
    try:
        content = path.read_bytes()
    except OSError as exc:
        # strerror, not str(exc): the message names the path once and holds nothing from the file.
        raise EnvironmentConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise EnvironmentConfigError(f"{variable}: {path} is not UTF-8 text") from None
    # `echo secret > file` and most secret stores end the value with a line break.
    return text.rstrip("\r\n")


def _decode(field: FieldInfo, text: str, variable: str) -> Any:
    """The value as validation should see it: text for single values (pydantic converts numbers, booleans
    and paths), decoded JSON for lists and mappings, also a comma list for a list of single values."""
    annotation, optional = _without_none(field.annotation)
    if text == "" and optional:
        return None  # an empty variable unsets an optional key (e.g. back to the embedded broker)
    if typing.get_origin(annotation) not in _COLLECTIONS:
        return _literal_from_text(annotation, text)
    if typing.get_origin(annotation) is not dict and not text.lstrip().startswith("[") and all(
            _is_single_value(item) for item in typing.get_args(annotation) if item is not Ellipsis):
        return [item.strip() for item in text.split(",") if item.strip()]
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg and the position only: the document may be a secret.
        raise EnvironmentConfigError(f"{variable}: not valid JSON ({exc.msg} at line {exc.lineno}, column "
                                     f"{exc.colno})") from None


def _without_none(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        optional = len(members) < len(typing.get_args(annotation))
        return (members[0] if len(members) == 1 else annotation), optional
    return annotation, False


def _is_single_value(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return all(_is_single_value(arg) for arg in typing.get_args(annotation))
    return typing.get_origin(annotation) not in _COLLECTIONS and not _is_model(annotation)


def _literal_from_text(annotation: Any, text: str) -> Any:
    """`qos: Literal[0, 1]` from "1": pydantic matches literals by value, and a variable is always text."""
    if typing.get_origin(annotation) is typing.Literal:
        for choice in typing.get_args(annotation):
            if not isinstance(choice, str) and str(choice) == text:
                return choice
    return text


def _copy_mappings(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy_mappings(item) for key, item in value.items()}
    return value
