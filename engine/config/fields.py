"""The value types of `channels.yaml`'s settings, as pydantic annotations: each checks its value
the way the engine always has (no bool for a number, no number-like string, no empty string),
says what was wrong in the operator's words, and adds its bounds to the JSON Schema.

A field written `Annotated[int, Bounded(1, 100)]` is an integer in 1-100; `Text` is a non-empty
string; `Flag` true or false; `Texts` a non-empty list of `Text`; `OneOf(...)` one of a few
words.  A check fails with a `ValueError` whose text is the problem as printed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

JsonSchema = dict[str, Any]
FROM_YAML = "from_yaml"  # the validation context's flag: the value comes from channels.yaml


class _Before:
    """A check run on the YAML value before pydantic's own validation of the type."""

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def json(self, schema: JsonSchema) -> JsonSchema:
        return schema

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return self.json(handler(schema))


@dataclass(frozen=True)
class Bounded(_Before):
    """A whole number (or with `integer=False`, any number) from `lo` to `hi`."""

    lo: float
    hi: float
    integer: bool = True

    def check(self, value: Any) -> Any:
        ok = isinstance(value, int) if self.integer else isinstance(value, int | float)
        if not ok or isinstance(value, bool) or not self.lo <= value <= self.hi:
            kind = "an integer" if self.integer else "a number"
            raise ValueError(f"expected {kind} in {self.lo}-{self.hi}, got {value!r}")
        return value

    def json(self, schema: JsonSchema) -> JsonSchema:
        return {**schema, "minimum": self.lo, "maximum": self.hi}


@dataclass(frozen=True)
class Days(_Before):
    """A number of days above 0 and at most `most` (fractions allowed: 0.25 is six hours)."""

    most: int

    def check(self, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool) and (
                0 < value <= self.most):
            return value
        raise ValueError(f"expected a number of days above 0 and at most {self.most}, "
                         f"got {value!r}")

    def json(self, schema: JsonSchema) -> JsonSchema:
        return {**schema, "exclusiveMinimum": 0, "maximum": self.most}


@dataclass(frozen=True)
class OneOf(_Before):
    """One of a few words, after `fold` (e.g. `lower`: any case); `wording` says which."""

    words: tuple[str, ...]
    wording: str  # `{got}` in it is the value found
    fold: Callable[[Any], Any] | None = None

    def check(self, value: Any) -> Any:
        word = self.fold(value) if self.fold else value
        if word not in self.words:
            raise ValueError(self.wording.format(got=repr(value)))
        return word

    def json(self, schema: JsonSchema) -> JsonSchema:
        words = set(self.words)
        if self.fold is not None:
            words |= {w.lower() for w in self.words} | {w.upper() for w in self.words}
        return {**schema, "enum": sorted(words)}


def lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


@dataclass(frozen=True)
class Shape(_Before):
    """A value of the right YAML kind (`list` or `dict`), non-empty for a list; else `wording`."""

    kind: type
    wording: str

    def check(self, value: Any) -> Any:
        if value is None and self.kind is dict:
            return None  # an optional mapping left empty
        if not isinstance(value, self.kind) or (self.kind is list and not value):
            raise ValueError(self.wording)
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


class _NonEmpty(_Before):
    """A non-empty string from YAML (`""` there is a mistake); in code `""` is "not set"."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        return core_schema.with_info_before_validator_function(self._checked, handler(source))

    def _checked(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if value == "" and not (info.context or {}).get(FROM_YAML):
            return value
        return self.check(value)

    def check(self, value: Any) -> Any:
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # `name: 7` is the name "7"
        raise ValueError("expected a non-empty string")

    def json(self, schema: JsonSchema) -> JsonSchema:
        return {**schema, "minLength": 1}


class _Boolean(_Before):
    def check(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value


@dataclass(frozen=True)
class Matching(_NonEmpty):
    """A non-empty string that `test` accepts (it raises ValueError saying what is wrong)."""

    test: Callable[[str], object]

    def check(self, value: Any) -> Any:
        text = super().check(value)
        self.test(text)
        return text


LIST = Shape(list, "expected a non-empty list")

Text = Annotated[str, _NonEmpty()]
Flag = Annotated[bool, _Boolean()]
Texts = Annotated[tuple[Text, ...], LIST]


def kind_of(value: Any) -> str:
    """How a YAML value is named in a problem: `a list`, `a string`, `nothing`, ..."""
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean", dict: "a mapping", type(None): "nothing"}.get(
                type(value), type(value).__name__)
