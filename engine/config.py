"""`channels.yaml`, parsed into frozen, validated objects.

Every problem is collected with its YAML path (`channels[0].listen.port: expected 1-65535`),
after the file's path when there is a file (`channels.yaml: channels[0].listen.port: …`), and
reported at once; unknown keys are errors, with the closest allowed key suggested; a half-valid
configuration never starts.

Relative paths in a configuration file (the SQLite database, `log.file`, TLS files, file
destinations' folders) are relative to the file's folder, not to the working directory: they
are made absolute here, so the rest of the engine only sees absolute ones.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import EngineError
from engine.ledger.lifecycle import EVENT_NAMES
from engine.ledger.settings import (
    DEFAULT_DEADLINES,
    DEFAULT_SWEEP_INTERVAL_MINUTES,
    DEFAULT_WINDOW_DAYS,
    LedgerSettings,
)
from engine.mappings.rules import DEFAULT_CLOSING_CODES, MappingRules, link_name
from engine.routes.filters import When, check_path, parse_when
from engine.routes.transforms import Step, parse_transform
from engine.tls import ClientTLS, ListenTLS, TLSFileError, client_options, server_options

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2")
DEFAULT_DATABASE = "sqlite:///var/engine.db"
DEFAULT_LOG_FILE = "var/log/engine.log"
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
LENIENT, STRICT = "lenient", "strict"  # `channels[].validation`
_SQLITE_URL = re.compile(r"^(sqlite(?:\+\w+)?:///)([^?]*)(\?.*)?$")
_UNKNOWN_KEY = re.compile(r"^(?P<path>(?:.*\.)?(?P<key>[^.]+)): unknown key "
                          r"\(expected one of: (?P<allowed>[^)]*)\)$")
_ACCEPT = re.compile(r"^([A-Z][A-Z0-9]{2})\^(\*|[A-Z0-9]{3}(?:-[A-Z0-9]{3})?)$")


class ConfigError(EngineError):
    """Every problem found in a configuration, each prefixed by its YAML path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Limits:
    max_frame_bytes: int = 10 * 1024 * 1024
    idle_timeout_s: float = 600.0
    max_connections: int = 100
    max_queued_frames: int = 64
    frame_timeout_s: float = 30.0  # a frame must be complete this long after its 0x0B (0: off)
    max_connections_per_address: int = 0  # from one peer address (0: only max_connections)


@dataclass(frozen=True, slots=True)
class AckConfig:
    """MSH-3/4 of our ACKs (empty: echo the inbound MSH-5/6), and when the ACK is sent:
    `commit` (the default: once stored) or `downstream` (pass-through: the answer of
    `destination` to the routed copy, relayed, or AE 207 after `timeout_s`)."""

    application: str = ""
    facility: str = ""
    mode: str = "commit"  # commit | downstream
    destination: str = ""
    timeout_s: float = 30.0

    @property
    def passthrough(self) -> str:
        """The destination whose answer is relayed, or "" in commit mode."""
        return self.destination if self.mode == "downstream" else ""


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    host: str
    port: int
    accept: frozenset[tuple[str, str]]  # (type, trigger); trigger "*" means any
    versions: tuple[str, ...] = DEFAULT_VERSIONS
    processing_ids: tuple[str, ...] = ("P",)
    ack: AckConfig = AckConfig()
    limits: Limits = Limits()
    tolerate_missing_cr: bool = True
    mllp_release: int = 1  # `framing.mllp_release`: 2 sends the R2 commit ACK/NAK (docs/hl7-rules.md)
    rules: MappingRules = MappingRules()
    allow: tuple[IPNetwork, ...] = ()  # `listen.allow`: the peers it takes; empty: any
    tls: ListenTLS | None = None  # `listen.tls`: TLS (mutual with a client_ca); None: plain TCP
    validation: str = LENIENT  # `validation:` lenient, or strict (hl7apy: engine/strict.py)

    def allows(self, host: str) -> bool:
        """May a peer at this address connect?  (IPv4 seen as IPv6-mapped counts as IPv4.)"""
        if not self.allow:
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.allow)

    def accepts_type(self, msg_type: str) -> bool:
        return any(t == msg_type for t, _ in self.accept)

    def accepts(self, msg_type: str, trigger: str) -> bool:
        return (msg_type, trigger) in self.accept or (msg_type, "*") in self.accept


@dataclass(frozen=True, slots=True)
class Database:
    url: str = DEFAULT_DATABASE
    sqlite_synchronous: str = "FULL"
    group_commit_max: int = 1000
    commit_delay_ms: float = 1.0


@dataclass(frozen=True, slots=True)
class Logging:
    file: str = DEFAULT_LOG_FILE
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Retention:
    """`retention:`: how long message bodies are kept (None: for ever)."""

    message_bodies_days: float | None = None


@dataclass(frozen=True, slots=True)
class Destination:
    """Where routed messages go: a directory (`file`) or a downstream MLLP listener (`mllp`)."""

    name: str
    type: str  # file | mllp
    directory: str = ""  # file
    max_attempts: int = 20  # then a dead letter
    host: str = ""  # mllp
    port: int = 0
    ack_timeout_s: float = 30.0
    retry_initial_s: float = 1.0  # exponential backoff with jitter, capped at retry_max_s
    retry_max_s: float = 300.0
    order_key: str = ""  # `order: {per_key: PATH}`: the HL7 path; "" is `order: strict`
    tls: ClientTLS | None = None  # mllp: TLS to the downstream; None: plain TCP


@dataclass(frozen=True, slots=True)
class Http:
    """`http:`: where the web face listens (`listen: {host, port}`, port 0 picks a free one),
    under TLS with `tls` (the same settings as a channel's `listen.tls`)."""

    host: str = "127.0.0.1"
    port: int = 8080
    tls: ListenTLS | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """A message route (`from:` a channel) or an event route (`on:` referral events)."""

    name: str
    source: str  # `from:`, a channel name; "" on an event route
    when: When
    transform: tuple[Step, ...]
    to: tuple[str, ...]
    on: tuple[str, ...] = ()  # `on:`, referral event names (engine.ledger.lifecycle)


@dataclass(frozen=True, slots=True)
class Config:
    channels: tuple[Channel, ...]
    database: Database = Database()
    log: Logging = Logging()
    source: str = ""
    destinations: tuple[Destination, ...] = ()
    routes: tuple[Route, ...] = ()
    workers: int = 1  # processes (engine/workers.py); the loader's default is 2 with destinations
    ledger: LedgerSettings = LedgerSettings()  # `ledger:`: the time rules (expiry, deadlines)
    retention: Retention = Retention()
    http: Http | None = None  # `http:`: the web face (metrics, health); None: no web server


@dataclass(slots=True)
class _Reader:
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
            self.problem(path, f"expected a mapping, got {_kind(value)}")
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


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean"}.get(type(value), type(value).__name__)


def _expand_accept(entry: str, path: str, r: _Reader) -> list[tuple[str, str]]:
    m = _ACCEPT.match(entry.upper())
    if not m:
        r.problem(path, f"expected TYPE^TRIGGER, TYPE^* or TYPE^S12-S26, got {entry!r}")
        return []
    msg_type, trig = m.groups()
    if "-" not in trig:
        return [(msg_type, trig)]
    first, last = trig.split("-")
    if first[0] != last[0] or not (first[1:].isdigit() and last[1:].isdigit()) or first > last:
        r.problem(path, f"a trigger range is like S12-S26 (same letter, ascending), got {trig!r}")
        return []
    width = len(first) - 1
    return [(msg_type, f"{first[0]}{n:0{width}d}") for n in range(int(first[1:]), int(last[1:]) + 1)]


def _channel(raw: Any, path: str, r: _Reader) -> Channel | None:
    keys = {"name", "listen", "accept", "versions", "processing_ids", "ack", "limits", "framing",
            "ledger", "validation"}
    m = r.mapping(raw, path, keys)
    if not isinstance(raw, dict):
        if raw is None:
            r.problem(path, "expected a mapping, got nothing")
        return None
    name = r.string(m.get("name"), f"{path}.name")
    if "listen" not in m:
        r.problem(f"{path}.listen", "required (listen: {host: 0.0.0.0, port: 2575})")
    listen = r.mapping(m.get("listen"), f"{path}.listen", {"host", "port", "allow", "tls"})
    host = r.string(listen.get("host"), f"{path}.listen.host", "0.0.0.0")
    if "port" not in listen and "listen" in m:
        r.problem(f"{path}.listen.port", "required, expected 1-65535 (0 picks a free port)")
    port = r.number(listen.get("port"), f"{path}.listen.port", 0, 0, 65535)
    if m.get("accept") is None:
        r.problem(f"{path}.accept", "required: the message types this channel takes, e.g. [REF^I12]")
    accept: set[tuple[str, str]] = set()
    for i, entry in enumerate(r.strings(m.get("accept"), f"{path}.accept", ())):
        accept.update(_expand_accept(entry, f"{path}.accept[{i}]", r))
    ack = r.mapping(m.get("ack"), f"{path}.ack",
                    {"application", "facility", "mode", "destination", "timeout_s"})
    lim = r.mapping(m.get("limits"), f"{path}.limits", set(Limits.__dataclass_fields__))
    d = Limits()
    limits = Limits(
        r.number(lim.get("max_frame_bytes"), f"{path}.limits.max_frame_bytes",
                 d.max_frame_bytes, 1024, 1 << 30),
        float(r.number(lim.get("idle_timeout_s"), f"{path}.limits.idle_timeout_s",
                       d.idle_timeout_s, 0, 86400 * 7, integer=False)),
        r.number(lim.get("max_connections"), f"{path}.limits.max_connections",
                 d.max_connections, 1, 100000),
        r.number(lim.get("max_queued_frames"), f"{path}.limits.max_queued_frames",
                 d.max_queued_frames, 1, 100000),
        float(r.number(lim.get("frame_timeout_s"), f"{path}.limits.frame_timeout_s",
                       d.frame_timeout_s, 0, 86400, integer=False)),
        r.number(lim.get("max_connections_per_address"),
                 f"{path}.limits.max_connections_per_address",
                 d.max_connections_per_address, 0, 100000),
    )
    framing = r.mapping(m.get("framing"), f"{path}.framing",
                        {"tolerate_missing_cr", "mllp_release"})
    allow = _networks(listen.get("allow"), f"{path}.listen.allow", r)
    tls = _listen_tls(listen.get("tls"), f"{path}.listen.tls", r)
    versions = r.strings(m.get("versions"), f"{path}.versions", DEFAULT_VERSIONS)
    for i, v in enumerate(versions):
        if not re.fullmatch(r"2\.\d+(\.\d+)?", v):
            r.problem(f"{path}.versions[{i}]", f"expected an HL7 v2 version like 2.5.1, got {v!r}")
    return Channel(
        name=name,
        host=host,
        port=port,
        accept=frozenset(accept),
        versions=versions,
        processing_ids=r.strings(m.get("processing_ids"), f"{path}.processing_ids", ("P",)),
        ack=_ack(ack, f"{path}.ack", r),
        limits=limits,
        tolerate_missing_cr=r.boolean(framing.get("tolerate_missing_cr"),
                                      f"{path}.framing.tolerate_missing_cr", True),
        mllp_release=r.number(framing.get("mllp_release"), f"{path}.framing.mllp_release", 1,
                              1, 2),
        rules=_rules(m.get("ledger"), f"{path}.ledger", r),
        allow=allow,
        tls=tls,
        validation=_validation(m.get("validation"), f"{path}.validation", r),
    )


def _validation(raw: Any, path: str, r: _Reader) -> str:
    """`validation: lenient | strict` (default lenient)."""
    if raw is None:
        return LENIENT
    if raw not in (LENIENT, STRICT):
        r.problem(path, f"expected {LENIENT} or {STRICT}, got {raw!r}")
        return LENIENT
    return STRICT if raw == STRICT else LENIENT


def _listen_tls(raw: Any, path: str, r: _Reader) -> ListenTLS | None:
    """`listen.tls: {cert, key, client_ca}`: files read and checked now (engine/tls.py)."""
    if raw is None:
        return None
    m = r.mapping(raw, path, {"cert", "key", "client_ca"})
    for key in ("cert", "key"):
        if m.get(key) is None:
            r.problem(f"{path}.{key}", "required: a PEM file")
    tls = ListenTLS(r.file(m.get("cert"), f"{path}.cert", ""),
                    r.file(m.get("key"), f"{path}.key", ""),
                    r.file(m.get("client_ca"), f"{path}.client_ca", ""))
    if tls.cert and tls.key:
        try:
            server_options(tls)
        except TLSFileError as exc:
            r.problem(path, str(exc))
    return tls


def _client_tls(raw: Any, path: str, host: str, r: _Reader) -> ClientTLS | None:
    """A destination's `tls: {ca, cert, key, server_name}` (`{}`: the system's trust store)."""
    if raw is None:
        return None
    m = r.mapping(raw, path, {"ca", "cert", "key", "server_name"})
    tls = ClientTLS(r.file(m.get("ca"), f"{path}.ca", ""),
                    r.file(m.get("cert"), f"{path}.cert", ""),
                    r.file(m.get("key"), f"{path}.key", ""),
                    r.string(m.get("server_name"), f"{path}.server_name", ""))
    if bool(tls.cert) != bool(tls.key):
        r.problem(path, "cert and key go together (a client certificate and its key)")
    elif host:
        try:
            client_options(tls, host)
        except TLSFileError as exc:
            r.problem(path, str(exc))
    return tls


def _networks(raw: Any, path: str, r: _Reader) -> tuple[IPNetwork, ...]:
    """`listen.allow`: addresses and networks (`10.1.2.3`, `10.0.0.0/8`, `fd00::/8`)."""
    out: list[IPNetwork] = []
    for i, text in enumerate(r.strings(raw, path, ())):
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            r.problem(f"{path}[{i}]", f"expected an IP address or network like 10.0.0.0/8, "
                                      f"got {text!r}")
    return tuple(out)


def _ack(m: dict[str, Any], path: str, r: _Reader) -> AckConfig:
    mode = r.string(m.get("mode"), f"{path}.mode", "commit")
    if mode not in ("commit", "downstream"):
        r.problem(f"{path}.mode", f"expected commit or downstream, got {mode!r}")
    destination = ""
    if mode == "downstream":
        destination = r.string(m.get("destination"), f"{path}.destination")
    elif "destination" in m:
        r.problem(f"{path}.destination", "only with mode: downstream")
    return AckConfig(r.string(m.get("application"), f"{path}.application", ""),
                     r.string(m.get("facility"), f"{path}.facility", ""), mode, destination,
                     float(r.number(m.get("timeout_s"), f"{path}.timeout_s", 30.0, 0.1, 3600,
                                    integer=False)))


def _check_passthrough(channels: list[tuple[int, Channel]], config: Config, r: _Reader) -> None:
    """`ack: {mode: downstream}` needs an MLLP destination that a route of the channel feeds."""
    kinds = {d.name: d.type for d in config.destinations}
    for i, ch in channels:
        name, path = ch.ack.passthrough, f"channels[{i}].ack.destination"
        if not name:
            continue
        if name not in kinds:
            r.problem(path, f"no destination named {name!r}")
        elif kinds[name] != "mllp":
            r.problem(path, f"{name!r} is a {kinds[name]} destination; only an mllp "
                            "destination answers with an ACK")
        elif not any(rt.source == ch.name and name in rt.to for rt in config.routes):
            r.problem(path, f"no route from channel {ch.name!r} sends to {name!r}")


def _rules(raw: Any, path: str, r: _Reader) -> MappingRules:
    m = r.mapping(raw, path, {"order_specialties", "closing_codes", "close_on_results",
                              "specialties", "referred_to", "link_fields"})
    codes = r.strings(m.get("closing_codes"), f"{path}.closing_codes", ())
    referred_to = "" if m.get("referred_to") is None else check_path(
        m["referred_to"], f"{path}.referred_to", r.problems) or ""
    return MappingRules(
        _code_map(m.get("order_specialties"), f"{path}.order_specialties", "OBR-4 code", r),
        frozenset(codes) | DEFAULT_CLOSING_CODES,
        r.boolean(m.get("close_on_results"), f"{path}.close_on_results", False),
        {code.upper(): specialty for code, specialty in _code_map(
            m.get("specialties"), f"{path}.specialties", "code", r).items()},
        referred_to,
        _link_fields(m.get("link_fields"), f"{path}.link_fields", r))


def _link_fields(raw: Any, path: str, r: _Reader) -> tuple[str, ...]:
    """`ledger.link_fields: [SCH.4, ZRF.1]`: HL7 paths to a field, not SCH-26/27 (always
    tried first); a segment and field of at most 8 characters as `SEG-N`, the name history and
    `via` show."""
    out: list[str] = []
    for i, item in enumerate(r.strings(raw, path, ())):
        found = check_path(item, f"{path}[{i}]", r.problems)
        if found is None:
            continue
        name = link_name(found)
        if name in ("SCH-26", "SCH-27"):
            r.problem(f"{path}[{i}]", f"{name} is always tried first; list other fields")
        elif len(name) > 8:
            r.problem(f"{path}[{i}]", f"expected a segment and field like SCH.4, got {found!r}")
        else:
            out.append(found)
    return tuple(out)


def _code_map(table: Any, path: str, what: str, r: _Reader) -> dict[str, str]:
    """A mapping of code: specialty (both non-empty strings)."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        r.problem(path, f"expected a mapping of {what}: specialty")
        return {}
    return {str(code): r.string(specialty, f"{path}.{code}") for code, specialty in table.items()}


def _database(raw: Any, r: _Reader) -> Database:
    if raw is None:
        return Database(url=r.sqlite_under_base(DEFAULT_DATABASE))
    if isinstance(raw, str):
        return Database(url=r.sqlite_under_base(r.string(raw, "database")))
    m = r.mapping(raw, "database", {"url", "sqlite_synchronous", "group_commit_max",
                                    "commit_delay_ms"})
    raw_sync = m.get("sqlite_synchronous")
    if raw_sync is False:  # YAML reads an unquoted OFF as false
        raw_sync = "OFF"
    sync = r.string(raw_sync, "database.sqlite_synchronous", "FULL").upper()
    if sync not in SYNCHRONOUS:
        r.problem("database.sqlite_synchronous", f"expected one of {', '.join(SYNCHRONOUS)}")
        sync = "FULL"
    return Database(
        url=r.sqlite_under_base(r.string(m.get("url"), "database.url", DEFAULT_DATABASE)),
        sqlite_synchronous=sync,
        group_commit_max=r.number(m.get("group_commit_max"), "database.group_commit_max",
                                  1000, 1, 100000),
        commit_delay_ms=float(r.number(m.get("commit_delay_ms"), "database.commit_delay_ms",
                                       1.0, 0, 1000, integer=False)),
    )


def parse_config(data: Any, source: str = "") -> Config:
    """Validate a loaded YAML document.  Raises `ConfigError` listing every problem.  With a
    `source` (the file's path), relative paths in it are taken from the file's folder."""
    r = _Reader(base=Path(source).absolute().parent if source else None)
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
        ch = _channel(raw, f"channels[{i}]", r)
        if ch is not None:
            channels.append((i, ch))
    _check_unique(channels, r)
    log = r.mapping(top.get("log"), "log", {"file", "level"})
    level = r.string(log.get("level"), "log.level", "info").lower()
    if level not in ("debug", "info", "warning", "error"):
        r.problem("log.level", "expected debug, info, warning or error")
    destinations = _destinations(top.get("destinations"), r)
    config = Config(
        channels=tuple(ch for _, ch in channels),
        database=_database(top.get("database"), r),
        log=Logging(r.file(log.get("file"), "log.file", DEFAULT_LOG_FILE), level),
        source=source,
        destinations=destinations,
        # With destinations the main process delivers and a worker ingests (engine/workers.py):
        # on one interpreter delivery and full-speed ingest share the GIL and delivery lags.
        workers=r.number(top.get("workers"), "workers", 2 if destinations else 1, 1, 64),
        routes=_routes(top.get("routes"), {ch.name for _, ch in channels},
                       {d.name for d in destinations}, r),
        ledger=_ledger(top.get("ledger"), r),
        retention=_retention(top.get("retention"), r),
        http=_http(top.get("http"), channels, r) if "http" in top else None,
    )
    _check_passthrough(channels, config, r)
    if r.problems:
        raise ConfigError(_report(r.problems, source))
    return config


def _report(problems: list[str], source: str) -> list[str]:
    """The problems as printed: each after the file's path (when parsed from a file), and an
    unknown key with the allowed key it most resembles.  (The route filter and transform parsers
    word unknown keys the same way as `_Reader.mapping`, so all are completed here.)"""
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


def _ledger(raw: Any, r: _Reader) -> LedgerSettings:
    """`ledger: {default_window_days, deadlines_days: {PRIORITY: days}, sweep_interval_minutes}`;
    the deadlines given replace those defaults, the others stay."""
    m = r.mapping(raw, "ledger", {"default_window_days", "deadlines_days",
                                  "sweep_interval_minutes"})
    window = r.number(m.get("default_window_days"), "ledger.default_window_days",
                      DEFAULT_WINDOW_DAYS, 1, 36500)
    interval = r.number(m.get("sweep_interval_minutes"), "ledger.sweep_interval_minutes",
                        DEFAULT_SWEEP_INTERVAL_MINUTES, 1, 10080)
    deadlines = dict(DEFAULT_DEADLINES)
    table = m.get("deadlines_days")
    if table is not None and not isinstance(table, dict):
        r.problem("ledger.deadlines_days", "expected a mapping of priority: days, e.g. {S: 1}")
    elif table:
        for code, days in table.items():
            path = f"ledger.deadlines_days.{code}"
            if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z0-9]{1,8}", code):
                r.problem(path, "expected a priority code (RF1-2.1 / ORC-7), e.g. S, A or R")
            elif (found := _days(days, path, 3650, r)) is not None:
                deadlines[code.upper()] = found
    return LedgerSettings(window, deadlines, interval)


def _http(raw: Any, channels: list[tuple[int, Channel]], r: _Reader) -> Http:
    """`http: {listen: {host, port}, tls: {cert, key, client_ca}}`; its port must not be a
    channel's on the same address."""
    m = r.mapping(raw, "http", {"listen", "tls"})
    if raw is not None and not isinstance(raw, dict):
        return Http()
    if "listen" not in m:
        r.problem("http.listen", "required (listen: {host: 127.0.0.1, port: 8080})")
    listen = r.mapping(m.get("listen"), "http.listen", {"host", "port"})
    if "listen" in m and "port" not in listen:
        r.problem("http.listen.port", "required, expected 0-65535 (0 picks a free port)")
    http = Http(r.string(listen.get("host"), "http.listen.host", "127.0.0.1"),
                r.number(listen.get("port"), "http.listen.port", 0, 0, 65535),
                _listen_tls(m.get("tls"), "http.tls", r))
    clash = next((i for i, ch in channels if http.port and ch.port == http.port and (
        ch.host == http.host or WILDCARD in (ch.host, http.host))), None)
    if clash is not None:
        r.problem("http.listen.port", f"already used by channels[{clash}]")
    return http


def _retention(raw: Any, r: _Reader) -> Retention:
    """`retention: {message_bodies_days}`: absent or null keeps bodies for ever."""
    m = r.mapping(raw, "retention", {"message_bodies_days"})
    days = m.get("message_bodies_days")
    if days is None:
        return Retention()
    return Retention(_days(days, "retention.message_bodies_days", 36500, r))


def _days(value: Any, path: str, most: int, r: _Reader) -> float | None:
    """A number of days above 0 (fractions allowed: 0.25 is six hours), or None (a problem)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= most:
        return value
    r.problem(path, f"expected a number of days above 0 and at most {most}, got {value!r}")
    return None


def _destinations(raw: Any, r: _Reader) -> tuple[Destination, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.problem("destinations", "expected a list of destinations")
        return ()
    out: list[Destination] = []
    for i, item in enumerate(raw):
        path = f"destinations[{i}]"
        m = r.mapping(item, path, {"name", "type", "directory", "max_attempts", "host", "port",
                                   "ack_timeout_s", "retry", "order", "tls"})
        name = r.string(m.get("name"), f"{path}.name")
        kind = r.string(m.get("type"), f"{path}.type", "file")
        if any(d.name == name for d in out):
            r.problem(f"{path}.name", f"duplicate destination name {name!r}")
        retry = r.mapping(m.get("retry"), f"{path}.retry", {"initial_s", "max_s", "max_attempts"})
        attempts = r.number(retry.get("max_attempts", m.get("max_attempts")),
                            f"{path}.retry.max_attempts", 20, 1, 100000)
        order_key = _order(m.get("order"), f"{path}.order", r)
        if kind == "file" and "tls" in m:
            r.problem(f"{path}.tls", "only for mllp destinations")
        if kind == "file":  # a failed write is retried twice a second
            out.append(Destination(name, kind, r.file(m.get("directory"), f"{path}.directory"),
                                   attempts, retry_initial_s=0.5, retry_max_s=0.5,
                                   order_key=order_key))
        elif kind == "mllp":
            host = r.string(m.get("host"), f"{path}.host")
            out.append(Destination(
                name, kind, max_attempts=attempts, order_key=order_key,
                tls=_client_tls(m.get("tls"), f"{path}.tls", host, r),
                host=host,
                port=r.number(m.get("port"), f"{path}.port", 0, 1, 65535),
                ack_timeout_s=float(r.number(m.get("ack_timeout_s"), f"{path}.ack_timeout_s",
                                             30.0, 0.01, 3600, integer=False)),
                retry_initial_s=float(r.number(retry.get("initial_s"), f"{path}.retry.initial_s",
                                               1.0, 0, 3600, integer=False)),
                retry_max_s=float(r.number(retry.get("max_s"), f"{path}.retry.max_s", 300.0, 0,
                                           86400, integer=False))))
        else:
            r.problem(f"{path}.type", f"expected file or mllp, got {kind!r}")
    return tuple(out)


def _order(raw: Any, path: str, r: _Reader) -> str:
    """`strict` (the default) → ""; `{per_key: PID.3.1}` → the HL7 path of the key."""
    if raw is None or raw == "strict":
        return ""
    if not isinstance(raw, dict):
        got = repr(raw) if isinstance(raw, str) else _kind(raw)
        r.problem(path, f"expected strict or {{per_key: HL7 path}}, got {got}")
        return ""
    r.mapping(raw, path, {"per_key"})
    if "per_key" not in raw:
        r.problem(f"{path}.per_key", "required: the HL7 path of the key, e.g. PID.3.1")
        return ""
    return check_path(raw["per_key"], f"{path}.per_key", r.problems) or ""


def _routes(raw: Any, channels: set[str], destinations: set[str], r: _Reader
            ) -> tuple[Route, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.problem("routes", "expected a list of routes")
        return ()
    out: list[Route] = []
    for i, item in enumerate(raw):
        path = f"routes[{i}]"
        m = r.mapping(item, path, {"name", "from", "when", "transform", "to", "on"})
        name = r.string(m.get("name"), f"{path}.name")
        source, events = _route_input(m, path, channels, r)
        if "on" in m and "from" not in m and "when" in m:
            r.problem(f"{path}.when", "not allowed on an on: route (referral events are not "
                                      "filtered by message content)")
        to = r.strings(m.get("to"), f"{path}.to", ())
        for j, dest in enumerate(to):
            if dest not in destinations:
                r.problem(f"{path}.to[{j}]", f"no destination named {dest!r}")
        if m.get("to") is None:
            r.problem(f"{path}.to", "required: the destinations this route feeds")
        when = parse_when(m.get("when"), f"{path}.when", r.problems)
        steps = parse_transform(m.get("transform"), f"{path}.transform", r.problems)
        out.append(Route(name, source, when, steps, to, events))
    return tuple(out)


def _route_input(m: dict[str, Any], path: str, channels: set[str], r: _Reader
                 ) -> tuple[str, tuple[str, ...]]:
    """(`from:` channel, `on:` events): a route has exactly one of them."""
    if ("from" in m) == ("on" in m):
        r.problem(path, "give either from: (a channel) or on: (referral events)"
                  + (", not both" if "from" in m else ""))
        return "", ()
    if "on" in m:
        events = r.strings(m.get("on"), f"{path}.on", ())
        for j, event in enumerate(events):
            if event not in EVENT_NAMES:
                r.problem(f"{path}.on[{j}]", f"unknown referral event {event!r} (expected one "
                                             f"of: {', '.join(EVENT_NAMES)})")
        return "", tuple(dict.fromkeys(e for e in events if e in EVENT_NAMES))
    source = r.string(m.get("from"), f"{path}.from")
    if source and source not in channels:
        r.problem(f"{path}.from", f"no channel named {source!r}")
    return source, ()


def _check_unique(channels: list[tuple[int, Channel]], r: _Reader) -> None:
    seen_names: dict[str, int] = {}
    seen_ports: dict[tuple[str, int], int] = {}
    for i, ch in channels:
        if ch.name in seen_names:
            r.problem(f"channels[{i}].name", f"duplicate of channels[{seen_names[ch.name]}].name")
        seen_names.setdefault(ch.name, i)
        clash = next((j for (host, port), j in seen_ports.items() if port == ch.port and (
            host == ch.host or WILDCARD in (host, ch.host))), None)
        if ch.port and clash is not None:
            r.problem(f"channels[{i}].listen.port", f"already used by channels[{clash}]")
        seen_ports.setdefault((ch.host, ch.port), i)


_BOOL_TAG, _STR_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:str"
WILDCARD = "0.0.0.0"  # listens on every address, so it clashes with any host on its port


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
