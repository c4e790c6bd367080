"""The configuration as the engine uses it: frozen values (`Config`, `Channel`, `Destination`,
`Route`, `Http`) built from the validated schema, with the schema's defaults, and `ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config.schema import ChannelDoc, DestinationDoc, FramingDoc, HttpListenDoc, RetryDoc
from engine.config.settings import (
    AckConfig,
    Database,
    Limits,
    Logging,
    Retention,
)
from engine.errors import EngineError
from engine.ledger.settings import LedgerSettings
from engine.mappings.rules import MappingRules
from engine.mllp.options import IPNetwork as IPNetwork
from engine.mllp.options import peer_allowed
from engine.routes.filters import When
from engine.routes.transforms import Step
from engine.tls import ClientTLS, ListenTLS

# The defaults of the values below are the schema's (written there once).
_FRAMING, _RETRY, _CHANNEL = FramingDoc(), RetryDoc(), ChannelDoc.model_fields
_ACK_TIMEOUT_S = DestinationDoc.model_fields["ack_timeout_s"].default
_HTTP_HOST = HttpListenDoc.model_fields["host"].default


class ConfigError(EngineError):
    """Every problem found in a configuration, each prefixed by its YAML path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    host: str
    port: int
    accept: frozenset[tuple[str, str]]  # (type, trigger); trigger "*" means any
    versions: tuple[str, ...] = _CHANNEL["versions"].default
    processing_ids: tuple[str, ...] = _CHANNEL["processing_ids"].default
    ack: AckConfig = AckConfig()
    limits: Limits = Limits()
    tolerate_missing_cr: bool = _FRAMING.tolerate_missing_cr
    # `framing.mllp_release`: 2 sends the R2 commit ACK/NAK (docs/hl7-rules.md)
    mllp_release: int = _FRAMING.mllp_release
    rules: MappingRules = MappingRules()
    allow: tuple[IPNetwork, ...] = ()  # `listen.allow`: the peers it takes; empty: any
    tls: ListenTLS | None = None  # `listen.tls`: TLS (mutual with a client_ca); None: plain TCP
    validation: str = _CHANNEL["validation"].default  # `validation:` lenient, or strict (hl7apy: engine/strict.py)

    def allows(self, host: str) -> bool:
        """May a peer at this address connect?  (IPv4 seen as IPv6-mapped counts as IPv4.)"""
        return peer_allowed(self.allow, host)

    def accepts_type(self, msg_type: str) -> bool:
        return any(t == msg_type for t, _ in self.accept)

    def accepts(self, msg_type: str, trigger: str) -> bool:
        return (msg_type, trigger) in self.accept or (msg_type, "*") in self.accept


@dataclass(frozen=True, slots=True)
class Destination:
    """Where routed messages go: a directory (`file`) or a downstream MLLP listener (`mllp`)."""

    name: str
    type: str  # file | mllp
    directory: str = ""  # file
    max_attempts: int = _RETRY.max_attempts  # then a dead letter
    host: str = ""  # mllp
    port: int = 0
    ack_timeout_s: float = _ACK_TIMEOUT_S
    retry_initial_s: float = _RETRY.initial_s  # exponential backoff with jitter, capped at max
    retry_max_s: float = _RETRY.max_s
    order_key: str = ""  # `order: {per_key: PATH}`: the HL7 path; "" is `order: strict`
    tls: ClientTLS | None = None  # mllp: TLS to the downstream; None: plain TCP


@dataclass(frozen=True, slots=True)
class Http:
    """`http:`: where the web face listens (`listen: {host, port}`, port 0 picks a free one),
    under TLS with `tls` (the same settings as a channel's `listen.tls`)."""

    host: str = _HTTP_HOST
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
