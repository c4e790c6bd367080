"""Reading `channels.yaml`: YAML with duplicate keys refused, every section parsed, every problem
reported at once after the file's path, with the key an unknown one most resembles.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from engine.config.channels import check_passthrough, check_unique, read_channel
from engine.config.model import DEFAULT_LOG_FILE, Channel, Config, ConfigError, Logging
from engine.config.reader import Reader
from engine.config.sections import (
    read_database,
    read_destinations,
    read_http,
    read_ledger,
    read_retention,
    read_routes,
)

_UNKNOWN_KEY = re.compile(r"^(?P<path>(?:.*\.)?(?P<key>[^.]+)): unknown key "
                          r"\(expected one of: (?P<allowed>[^)]*)\)$")


def parse_config(data: Any, source: str = "") -> Config:
    """Validate a loaded YAML document.  Raises `ConfigError` listing every problem.  With a
    `source` (the file's path), relative paths in it are taken from the file's folder."""
    r = Reader(base=Path(source).absolute().parent if source else None)
    top = r.mapping(data, "", {"database", "log", "channels", "destinations", "routes",
                               "workers", "ledger", "retention", "http"})
    if data is not None and not isinstance(data, dict):
        raise ConfigError(_report(r.problems, source))
    channels: list[tuple[int, Channel]] = []  # with the index in the YAML list, for paths
    raw_channels = top.get("channels")
    if not isinstance(raw_channels, list) or not raw_channels:
        r.problem("channels", "expected a non-empty list of channels")
        raw_channels = []
    for i, raw in enumerate(raw_channels):
        ch = read_channel(raw, f"channels[{i}]", r)
        if ch is not None:
            channels.append((i, ch))
    check_unique(channels, r)
    log = r.mapping(top.get("log"), "log", {"file", "level"})
    level = r.string(log.get("level"), "log.level", "info").lower()
    if level not in ("debug", "info", "warning", "error"):
        r.problem("log.level", "expected debug, info, warning or error")
    destinations = read_destinations(top.get("destinations"), r)
    config = Config(
        channels=tuple(ch for _, ch in channels),
        database=read_database(top.get("database"), r),
        log=Logging(r.file(log.get("file"), "log.file", DEFAULT_LOG_FILE), level),
        source=source,
        destinations=destinations,
        # With destinations the main process delivers and a worker ingests (engine/workers.py):
        # on one interpreter delivery and full-speed ingest share the GIL and delivery lags.
        workers=r.number(top.get("workers"), "workers", 2 if destinations else 1, 1, 64),
        routes=read_routes(top.get("routes"), {ch.name for _, ch in channels},
                       {d.name for d in destinations}, r),
        ledger=read_ledger(top.get("ledger"), r),
        retention=read_retention(top.get("retention"), r),
        http=read_http(top.get("http"), channels, r) if "http" in top else None,
    )
    check_passthrough(channels, config, r)
    if r.problems:
        raise ConfigError(_report(r.problems, source))
    return config


def _report(problems: list[str], source: str) -> list[str]:
    """The problems as printed: each after the file's path (when parsed from a file), and an
    unknown key with the allowed key it most resembles.  (The route filter and transform parsers
    word unknown keys the same way as `Reader.mapping`, so all are completed here.)"""
    prefix = f"{source}: " if source else ""
    return [prefix + _suggest(problem) for problem in problems]


def _suggest(problem: str) -> str:
    """`x.acept: unknown key (expected one of: accept, …)` → `x.acept: unknown key; did you
    mean 'accept'?`; without a close match, unchanged (the list of allowed keys)."""
    m = _UNKNOWN_KEY.match(problem)
    if m is None:
        return problem
    close = difflib.get_close_matches(m["key"], m["allowed"].split(", "), n=1)
    return f"{m['path']}: unknown key; did you mean {close[0]!r}?" if close else problem


_BOOL_TAG, _STR_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:str"


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.safe_load`, except that a key given twice in one mapping is an error, not a silent
    override, and that a key is never a boolean: YAML 1.1 reads an unquoted `on:` (a route's
    referral events) as `true:`."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _BOOL_TAG:
                key_node.tag = _STR_TAG
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path, reader: Callable[[Path], str] | None = None) -> Config:
    """Read and validate `channels.yaml`.  Raises `ConfigError` (also for unreadable YAML)."""
    p = Path(path)
    try:
        text = reader(p) if reader else p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read ({exc.strerror})"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{p}: cannot read (not UTF-8 at byte {exc.start})"]) from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or ""
        if problem.startswith("duplicate key"):
            raise ConfigError([f"{p}: {problem} at {where}"]) from exc
        detail = f" ({problem})" if problem else ""
        raise ConfigError([f"{p}: not valid YAML at {where}{detail}"]) from exc
    return parse_config(data, str(p))
