"""Reading `channels.yaml`: YAML with duplicate keys refused, each section validated against the
schema and built, the checks across sections, and every problem reported at once after the
file's path.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from engine.config.build import Builder
from engine.config.checks import (
    http_port_free,
    passthrough,
    route_targets,
    unique_channels,
    unique_destinations,
)
from engine.config.fields import FROM_YAML, Text, kind_of
from engine.config.model import Channel, Config, ConfigError, Destination, Http, Route
from engine.config.problems import keys_of, problems_of, suggest, unknown_key
from engine.config.schema import (
    ChannelDoc,
    DestinationDoc,
    Document,
    HttpDoc,
    LedgerDoc,
    RouteDoc,
    Workers,
)
from engine.config.settings import Database, Logging, Retention
from engine.ledger.settings import LedgerSettings


def parse_config(data: Any, source: str = "") -> Config:
    """Validate a loaded YAML document.  Raises `ConfigError` listing every problem.  With a
    `source` (the file's path), relative paths in it are taken from the file's folder."""
    b = Builder(base=Path(source).absolute().parent if source else None)
    if data is not None and not isinstance(data, dict):
        raise ConfigError(_report([f"(top level): expected a mapping, got {kind_of(data)}"],
                                  source))
    top: dict[str, Any] = data or {}
    allowed = keys_of(Document)
    b.problems.extend(unknown_key(str(key), allowed) for key in top if key not in allowed)
    channels = _channels(top.get("channels"), b)
    log = _valid(Logging, top.get("log"), "log", b) or Logging()
    destinations, known = _destinations(top.get("destinations"), b)
    database = _database(top.get("database"), b)
    raw_workers = top.get("workers")
    workers = None if raw_workers is None else _valid(Workers, raw_workers, "workers", b)
    routes = _routes(top.get("routes"), b)
    route_targets(routes, {ch.name for _, ch in channels}, known, b.problems)
    ledger = _valid(LedgerDoc, top.get("ledger"), "ledger", b)
    retention = _valid(Retention, top.get("retention"), "retention", b) or Retention()
    http = _http(top, channels, b)
    config = Config(
        channels=tuple(ch for i, ch in channels if i >= 0), database=b.database(database),
        log=b.log(log), source=source, destinations=destinations,
        # With destinations the main process delivers and a worker ingests (engine/workers.py):
        # on one interpreter delivery and full-speed ingest share the GIL and delivery lags.
        workers=workers or (2 if destinations else 1), routes=tuple(r for _, r in routes),
        ledger=b.ledger(ledger) if ledger else LedgerSettings(), retention=retention, http=http)
    if len(routes) == len(_items(top.get("routes"), "routes", Builder())):  # all read
        passthrough([(i, ch) for i, ch in channels if i >= 0], config, b.problems)
    if b.problems:
        raise ConfigError(_report(b.problems, source))
    return config


@cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def _valid(kind: Any, raw: Any, path: str, b: Builder) -> Any:
    """`raw` validated as a `kind`, or None with its problems added."""
    try:
        return _adapter(kind).validate_python(raw, context={FROM_YAML: True})
    except ValidationError as exc:
        b.problems.extend(problems_of(exc, kind, path))
        return None


def _items(raw: Any, section: str, b: Builder) -> list[tuple[int, Any]]:
    """A list section's entries with their index (none when absent or not a list)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        b.problems.append(f"{section}: expected a list of {section}")
        return []
    return list(enumerate(raw))


def _channels(raw: Any, b: Builder) -> list[tuple[int, Channel]]:
    """The channels that validated, by index; one that did not is kept as a stand-in with a
    negative index (-1 - index) when its name and port can be read, for the duplicate checks."""
    if not isinstance(raw, list) or not raw:
        b.problems.append("channels: expected a non-empty list of channels")
        return []
    out: list[tuple[int, Channel]] = []
    for i, item in enumerate(raw):
        doc = _valid(ChannelDoc, item, f"channels[{i}]", b)
        if doc is not None:
            out.append((i, b.channel(doc, f"channels[{i}]")))
        elif (stand_in := _stand_in(item)) is not None:
            out.append((-1 - i, stand_in))
    unique_channels([(i if i >= 0 else -1 - i, ch) for i, ch in out], b.problems)
    return out


def _stand_in(raw: Any) -> Channel | None:
    """What the duplicate checks need of a channel that did not validate: its name and port."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        return None
    return Channel(raw["name"].strip(), *_listen_of(raw, "0.0.0.0"), frozenset())


def _listen_of(raw: dict[str, Any], host: str) -> tuple[str, int]:
    """The host and port of an entry's `listen:` as far as they can be read (port 0: not)."""
    listen = raw["listen"] if isinstance(raw.get("listen"), dict) else {}
    given, port = listen.get("host", host), listen.get("port")
    if not isinstance(port, int) or isinstance(port, bool):
        port = 0
    return given if isinstance(given, str) else "", port


def _destinations(raw: Any, b: Builder) -> tuple[tuple[Destination, ...], set[str]]:
    """The destinations that validated, and every name given (for the routes' checks)."""
    out: list[Destination] = []
    names: list[tuple[int, str]] = []
    for i, item in _items(raw, "destinations", b):
        doc = _valid(DestinationDoc, item, f"destinations[{i}]", b)
        if doc is not None:
            out.append(b.destination(doc, f"destinations[{i}]"))
            names.append((i, doc.name))
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            names.append((i, item["name"].strip()))
    unique_destinations(names, b.problems)
    return tuple(out), {name for _, name in names}


def _database(raw: Any, b: Builder) -> Database:
    """`database: URL` or `database: {url, ...}`."""
    if isinstance(raw, str):
        url = _valid(Text, raw, "database", b)
        return Database(url=url) if url else Database()
    return _valid(Database, raw, "database", b) or Database()


def _routes(raw: Any, b: Builder) -> list[tuple[int, Route]]:
    out: list[tuple[int, Route]] = []
    for i, item in _items(raw, "routes", b):
        doc = _valid(RouteDoc, item, f"routes[{i}]", b)
        if doc is not None:
            out.append((i, b.route(doc, f"routes[{i}]", item)))
        elif isinstance(item, dict) and ("from" in item) == ("on" in item):
            b.route_input(RouteDoc.model_construct(), f"routes[{i}]", item)
    return out


def _http(top: dict[str, Any], channels: list[tuple[int, Channel]], b: Builder) -> Http | None:
    """`http:`, if given; its port must not be a channel's on the same address."""
    if "http" not in top:
        return None
    raw = top["http"]
    doc = _valid(HttpDoc, raw, "http", b)
    http = b.http(doc) if doc else Http(*_listen_of(raw if isinstance(raw, dict) else {},
                                                      Http().host))
    http_port_free(http, [(i, ch) for i, ch in channels if i >= 0], b.problems)
    return http


def _report(problems: list[str], source: str) -> list[str]:
    """The problems as printed: each after the file's path (when parsed from a file), and an
    unknown key with the allowed key it most resembles.  (The route filter and transform parsers
    word unknown keys in the schema's way, so theirs are completed here.)"""
    prefix = f"{source}: " if source else ""
    return [prefix + suggest(problem) for problem in problems]


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
