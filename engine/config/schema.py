"""The schema of `channels.yaml`, declared once: a pydantic model per mapping, with its keys
(unknown ones refused), defaults and bounds.  The loader validates with these models and builds
the engine's values from them; `json_schema()` is the JSON Schema editors check the file with
(`make schema` writes it to docs/channels.schema.json, which a test keeps current).
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from engine.config.fields import LIST, Bounded, Days, Flag, Matching, OneOf, Shape, Text, Texts
from engine.config.settings import (
    DEFAULT_VERSIONS,
    LENIENT,
    STRICT,
    AckConfig,
    Database,
    Limits,
    Logging,
    Retention,
    Section,
)
from engine.ledger.settings import DEFAULT_SWEEP_INTERVAL_MINUTES, DEFAULT_WINDOW_DAYS

_ACCEPT = re.compile(r"^([A-Z][A-Z0-9]{2})\^(\*|[A-Z0-9]{3}(?:-[A-Z0-9]{3})?)$")
ANY_PATH = WithJsonSchema({"type": "string", "description": "an HL7 path, e.g. PID.3.1"})


class Doc(Section, BaseModel):
    """A mapping of channels.yaml: unknown keys refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def accept_entry(entry: str) -> list[tuple[str, str]]:
    """`REF^I12` → [(REF, I12)]; `SIU^S12-S14` → S12, S13, S14; `MDM^*` → (MDM, *)."""
    m = _ACCEPT.match(entry.upper())
    if not m:
        raise ValueError(f"expected TYPE^TRIGGER, TYPE^* or TYPE^S12-S26, got {entry!r}")
    msg_type, trig = m.groups()
    if "-" not in trig:
        return [(msg_type, trig)]
    first, last = trig.split("-")
    if first[0] != last[0] or not (first[1:].isdigit() and last[1:].isdigit()) or first > last:
        raise ValueError(f"a trigger range is like S12-S26 (same letter, ascending), got {trig!r}")
    width = len(first) - 1
    return [(msg_type, f"{first[0]}{n:0{width}d}") for n in range(int(first[1:]),
                                                                   int(last[1:]) + 1)]


def _version(text: str) -> None:
    if not re.fullmatch(r"2\.\d+(\.\d+)?", text):
        raise ValueError(f"expected an HL7 v2 version like 2.5.1, got {text!r}")


def _network(text: str) -> None:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"expected an IP address or network like 10.0.0.0/8, "
                         f"got {text!r}") from None


Port = Annotated[int, Bounded(0, 65535)]  # 0 picks a free port
Workers = Annotated[int, Bounded(1, 64)]


class ListenTLSDoc(Doc):
    """`listen.tls` / `http.tls`: the certificate, its key, and the CA of client certificates."""

    cert: Annotated[Text, Field(description="a PEM file")]
    key: Annotated[Text, Field(description="a PEM file")]
    client_ca: Text = ""  # set: clients must present a certificate it signed


class ClientTLSDoc(Doc):
    """A destination's `tls` (`{}`: the system's trust store)."""

    ca: Text = ""
    cert: Text = ""
    key: Text = ""
    server_name: Text = ""


class ListenDoc(Doc):
    host: Text = "0.0.0.0"
    port: Port
    allow: Annotated[tuple[Annotated[str, Matching(_network)], ...], LIST] = ()
    tls: ListenTLSDoc | None = None


class FramingDoc(Doc):
    tolerate_missing_cr: Flag = True
    mllp_release: Annotated[int, Bounded(1, 2)] = 1  # 2: the commit ACK/NAK (MLLP release 2)


OrderCodes = Annotated[dict[str, Text] | None,
                      Shape(dict, "expected a mapping of OBR-4 code: specialty")]
SpecialtyCodes = Annotated[dict[str, Text] | None, Shape(dict, "expected a mapping of code: specialty")]


class LedgerRulesDoc(Doc):
    """`channels[].ledger`: how this channel's messages map onto referrals."""

    order_specialties: OrderCodes = None
    closing_codes: Texts = ()
    close_on_results: Flag = False
    specialties: SpecialtyCodes = None
    referred_to: Annotated[Any, ANY_PATH] = None
    link_fields: Annotated[tuple[Annotated[Any, ANY_PATH], ...], LIST] = ()


class ChannelDoc(BaseModel):
    """`channels[]`: one MLLP listener."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Text
    listen: ListenDoc
    accept: Annotated[tuple[Annotated[str, Matching(accept_entry)], ...], LIST]
    versions: Annotated[tuple[Annotated[str, Matching(_version)], ...], LIST] = DEFAULT_VERSIONS
    processing_ids: Texts = ("P",)
    ack: AckConfig = AckConfig()
    limits: Limits = Limits()
    framing: FramingDoc = FramingDoc()
    ledger: LedgerRulesDoc = LedgerRulesDoc()
    validation: Annotated[str, OneOf((LENIENT, STRICT), f"expected {LENIENT} or {STRICT}, "
                                                        "got {got}")] = LENIENT


class RetryDoc(Doc):
    initial_s: Annotated[float, Bounded(0, 3600, integer=False)] = 1.0
    max_s: Annotated[float, Bounded(0, 86400, integer=False)] = 300.0
    max_attempts: Annotated[int, Bounded(1, 100000)] = 20  # then a dead letter


ORDER = WithJsonSchema({"anyOf": [
    {"const": "strict"},
    {"type": "object", "properties": {"per_key": {"type": "string"}}, "required": ["per_key"],
     "additionalProperties": False}]})


class DestinationDoc(BaseModel):
    """`destinations[]`: a folder (`file`) or a downstream MLLP listener (`mllp`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Text
    type: Annotated[str, OneOf(("file", "mllp"), "expected file or mllp, got {got}")] = "file"
    directory: Text | None = None  # file
    host: Text | None = None  # mllp
    port: Annotated[int, Bounded(1, 65535)] | None = None
    ack_timeout_s: Annotated[float, Bounded(0.01, 3600, integer=False)] = 30.0
    retry: RetryDoc = RetryDoc()
    max_attempts: Annotated[int, Bounded(1, 100000)] | None = None  # older spelling of retry's
    order: Annotated[Any, ORDER] = None  # strict (the default) or {per_key: HL7 path}
    tls: ClientTLSDoc | None = None


class RouteDoc(BaseModel):
    """`routes[]`: a message route (`from:` a channel) or an event route (`on:` events)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Text
    source: Text | None = Field(None, alias="from")
    on: Texts | None = None
    when: Annotated[Any, WithJsonSchema({"type": "object"})] = None
    transform: Annotated[Any, WithJsonSchema({"type": "array"})] = None
    to: Texts


class HttpListenDoc(Doc):
    host: Text = "127.0.0.1"
    port: Port


class HttpDoc(Doc):
    """`http:`: the web face."""

    listen: HttpListenDoc
    tls: ListenTLSDoc | None = None


def _priority(code: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9]{1,8}", code):
        raise ValueError("expected a priority code (RF1-2.1 / ORC-7), e.g. S, A or R")


Deadlines = Annotated[dict[Annotated[str, Matching(_priority)], Annotated[float, Days(3650)]] | None,
                      Shape(dict, "expected a mapping of priority: days, e.g. {S: 1}")]


class LedgerDoc(Doc):
    """`ledger:`: the referral ledger's time rules."""

    default_window_days: Annotated[int, Bounded(1, 36500)] = DEFAULT_WINDOW_DAYS
    deadlines_days: Deadlines = None
    sweep_interval_minutes: Annotated[int, Bounded(1, 10080)] = DEFAULT_SWEEP_INTERVAL_MINUTES


class Document(BaseModel):
    """The whole of channels.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="channels.yaml",
                              json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"})

    channels: Annotated[list[ChannelDoc], Field(min_length=1, description=(
        "The MLLP listeners, each with its own rules (docs/configuration.md#channel-keys)."))]
    database: Annotated[Text | Database, Field(description=(
        "A SQLAlchemy URL, or a mapping with url and the SQLite and commit settings."))
                        ] = Database()
    log: Annotated[Logging, Field(description="The JSON message log and its level.")] = Logging()
    destinations: Annotated[list[DestinationDoc], Field(description=(
        "Where routed messages go: a folder (file) or a downstream MLLP listener (mllp)."))] = []
    routes: Annotated[list[RouteDoc], Field(description=(
        "Which messages (from: a channel) or referral events (on:) go to which destinations."))
                      ] = []
    workers: Annotated[Workers | None, Field(description=(
        "Processes; default 1, or 2 with destinations."))] = None
    ledger: Annotated[LedgerDoc, Field(description=(
        "The referral ledger's time rules: window, deadlines, sweep interval."))] = LedgerDoc()
    retention: Annotated[Retention, Field(description=(
        "How long message bodies are kept; absent: for ever."))] = Retention()
    http: Annotated[HttpDoc | None, Field(description=(
        "The web face (console, API, health and metrics); absent: no web server."))] = None


def json_schema() -> str:
    """The JSON Schema of channels.yaml, as committed in docs/channels.schema.json."""
    return json.dumps(Document.model_json_schema(by_alias=True), indent=2, sort_keys=True) + "\n"
