"""The configuration as the engine uses it: frozen, validated values (`Config`, `Channel`,
`Destination`, `Route`, ...) with their defaults, and `ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import EngineError
from engine.ledger.settings import (
    LedgerSettings,
)
from engine.mappings.rules import MappingRules
from engine.mllp.options import IPNetwork as IPNetwork
from engine.mllp.options import peer_allowed
from engine.routes.filters import When
from engine.routes.transforms import Step
from engine.tls import ClientTLS, ListenTLS

DEFAULT_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2")


DEFAULT_DATABASE = "sqlite:///var/engine.db"


DEFAULT_LOG_FILE = "var/log/engine.log"


SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


LENIENT, STRICT = "lenient", "strict"  # `channels[].validation`


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
        return peer_allowed(self.allow, host)

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
