"""Walking the YAML tree: `Reader` collects every problem with its YAML path instead of stopping
at the first, and makes relative paths relative to the config file's folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SQLITE_URL = re.compile(r"^(sqlite(?:\+\w+)?:///)([^?]*)(\?.*)?$")


@dataclass(slots=True)
class Reader:
    """Walks the YAML tree, collecting problems instead of stopping at the first."""

    problems: list[str] = field(default_factory=list)
    base: Path | None = None  # the config file's folder (absolute); None: paths stay as given

    def file(self, value: Any, path: str, default: str | None = None) -> str:
        """A path (a non-empty string), relative to the config file's folder."""
        return self.under_base(self.string(value, path, default))

    def under_base(self, text: str) -> str:
        if not text or self.base is None:
            return text
        return str(self.base / text)  # an absolute `text` stays as it is

    def sqlite_under_base(self, url: str) -> str:
        """`sqlite:///var/engine.db` (relative) → `sqlite:////etc/hl7/var/engine.db`; absolute
        paths, `:memory:`, `file:` URIs and other databases stay as they are."""
        m = _SQLITE_URL.match(url)
        if m is None or self.base is None:
            return url
        prefix, database, query = m.groups()
        if not database or database == ":memory:" or database.startswith(("/", "file:")):
            return url
        return f"{prefix}{self.under_base(database)}{query or ''}"

    def problem(self, path: str, text: str) -> None:
        self.problems.append(f"{path or '(top level)'}: {text}")

    def mapping(self, value: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping, got {kind_of(value)}")
            return {}
        for key in value:
            if key not in allowed:
                self.problem(f"{path}.{key}" if path else str(key),
                             f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        return value

    def string(self, value: Any, path: str, default: str | None = None) -> str:
        if value is None and default is not None:
            return default
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        self.problem(path, "expected a non-empty string")
        return default or ""

    def number(self, value: Any, path: str, default: float, lo: float, hi: float,
               integer: bool = True) -> Any:
        if value is None:
            return default
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if not ok or isinstance(value, bool) or not lo <= value <= hi:
            kind = "an integer" if integer else "a number"
            self.problem(path, f"expected {kind} in {lo}-{hi}, got {value!r}")
            return default
        return value

    def boolean(self, value: Any, path: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(path, f"expected true or false, got {value!r}")
            return default
        return value

    def strings(self, value: Any, path: str, default: tuple[str, ...]) -> tuple[str, ...]:
        if value is None:
            return default
        if not isinstance(value, list) or not value:
            self.problem(path, "expected a non-empty list")
            return default
        return tuple(self.string(v, f"{path}[{i}]") for i, v in enumerate(value))


def kind_of(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean"}.get(type(value), type(value).__name__)
