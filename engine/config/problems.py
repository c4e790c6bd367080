"""pydantic's validation errors in the operator's words, in one place: each becomes one line
starting with its YAML path (`channels[0].listen.port: expected an integer in 0-65535, got
70000`), an unknown key lists the allowed ones or names the one it most resembles, and a missing
key says what it is for.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from engine.config.fields import kind_of

Loc = tuple[int | str, ...]

# What a missing key is for, by (schema class, key); any other missing key is just "required".
_REQUIRED = {
    ("ChannelDoc", "listen"): "required (listen: {host: 0.0.0.0, port: 2575})",
    ("ChannelDoc", "accept"): "required: the message types this channel takes, e.g. [REF^I12]",
    ("ListenDoc", "port"): "required, expected 1-65535 (0 picks a free port)",
    ("HttpDoc", "listen"): "required (listen: {host: 127.0.0.1, port: 8080})",
    ("HttpListenDoc", "port"): "required, expected 0-65535 (0 picks a free port)",
    ("ListenTLSDoc", "cert"): "required: a PEM file",
    ("ListenTLSDoc", "key"): "required: a PEM file",
    ("RouteDoc", "to"): "required: the destinations this route feeds",
    ("ChannelDoc", "name"): "expected a non-empty string",
    ("DestinationDoc", "name"): "expected a non-empty string",
    ("RouteDoc", "name"): "expected a non-empty string",
}
_MAPPING = {"model_type", "dataclass_type", "dict_type", "model_attributes_type"}
_UNKNOWN = {"extra_forbidden", "unexpected_keyword_argument", "invalid_key"}
_UNKNOWN_KEY = re.compile(r"^(?P<path>(?:.*\.)?(?P<key>[^.]+)): unknown key "
                          r"\(expected one of: (?P<allowed>[^)]*)\)$")


def yaml_path(prefix: str, loc: Loc) -> str:
    """`channels[0]` + ("listen", "port") → `channels[0].listen.port` (dict keys' `[key]` marks
    dropped: a bad key is named by its own path)."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "[key]":
            path += f".{part}" if path else part
    return path


def problems_of(error: ValidationError, schema: Any, prefix: str) -> list[str]:
    """Every error in `error` (validating a value of type `schema` found at `prefix`), as
    problem lines: an unknown key before the other problems of its mapping."""
    details = error.errors()
    order = {id(d): _position(d, details, n) for n, d in enumerate(details)}
    return [_line(d, schema, prefix) for d in sorted(details, key=lambda d: order[id(d)])]


def _position(detail: ErrorDetails, details: list[ErrorDetails], n: int) -> tuple[float, int]:
    """Where an error goes: unknown keys just before the first error inside their mapping (the
    outer mapping's first)."""
    loc = detail["loc"]
    if detail["type"] not in _UNKNOWN:
        return n, len(loc)
    parent = loc[:-1]
    first = min(i for i, d in enumerate(details) if d["loc"][:len(parent)] == parent)
    return first - 0.5, len(loc)


def _line(detail: ErrorDetails, schema: Any, prefix: str) -> str:
    loc, kind = detail["loc"], detail["type"]
    path = yaml_path(prefix, loc) or "(top level)"
    if kind == "value_error":
        return f"{path}: {detail['ctx']['error']}"
    if kind in _MAPPING:
        return f"{path}: expected a mapping, got {kind_of(detail['input'])}"
    owner = _model_at(schema, loc[:-1])
    if kind == "invalid_key":  # a key YAML read as a number, `1:`
        return unknown_key(f"{yaml_path(prefix, loc[:-1]) or ''}.{loc[-1]}".lstrip("."),
                           keys_of(owner))
    if kind in _UNKNOWN:
        return unknown_key(path, keys_of(owner))
    if kind == "missing":
        what = _REQUIRED.get((getattr(owner, "__name__", ""), str(loc[-1])), "required")
        return f"{path}: {what}"
    if kind in ("list_type", "tuple_type", "too_short"):
        return f"{path}: expected a non-empty list"
    return f"{path}: {detail['msg']}"


def unknown_key(path: str, allowed: list[str]) -> str:
    """`x.acept` → `x.acept: unknown key; did you mean 'accept'?`; without a close match the
    allowed keys are listed."""
    key = path.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f"{path}: unknown key; did you mean {close[0]!r}?"
    return f"{path}: unknown key (expected one of: {', '.join(sorted(allowed))})"


def suggest(problem: str) -> str:
    """A problem worded like `x.form: unknown key (expected one of: from, to)` by the route
    filter and transform parsers, given the same suggestion as the schema's unknown keys."""
    m = _UNKNOWN_KEY.match(problem)
    return unknown_key(m["path"], m["allowed"].split(", ")) if m else problem


def keys_of(model: Any) -> list[str]:
    """The keys a schema mapping allows (a key's YAML spelling: `from`, not `source`)."""
    fields = getattr(model, "__pydantic_fields__", {})
    return [info.alias or name for name, info in fields.items()]


def _model_at(schema: Any, loc: Loc) -> Any:
    """The schema class of the mapping at `loc` inside a value of type `schema`."""
    current = schema
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, str) and hasattr(current, "__pydantic_fields__"):
            fields = current.__pydantic_fields__
            name = next((n for n, f in fields.items() if part in (n, f.alias)), None)
            current = fields[name].annotation if name else None
        else:
            args = typing.get_args(current)
            current = args[-1] if args else None  # list[X], tuple[X, ...], dict[K, X]
    return _unwrap(current)


def _unwrap(kind: Any) -> Any:
    """`Annotated[X, ...]` and `X | None` → X."""
    while True:
        if typing.get_origin(kind) is typing.Annotated:
            kind = typing.get_args(kind)[0]
        elif isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        else:
            return kind
