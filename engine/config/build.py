"""From the validated schema to the engine's values: accept lists expanded, relative paths made
absolute from the file's folder, TLS files read, HL7 paths, route filters and transforms parsed;
each problem found on the way is added with its YAML path.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config.fields import kind_of
from engine.config.model import Channel, Destination, Http, Route
from engine.config.problems import unknown_key
from engine.config.schema import (
    ChannelDoc,
    ClientTLSDoc,
    DestinationDoc,
    HttpDoc,
    LedgerDoc,
    LedgerRulesDoc,
    ListenTLSDoc,
    RouteDoc,
    accept_entry,
)
from engine.config.settings import AckConfig, Database, Logging
from engine.ledger.lifecycle import EVENT_NAMES
from engine.ledger.settings import DEFAULT_DEADLINES, LedgerSettings
from engine.mappings.rules import DEFAULT_CLOSING_CODES, MappingRules, link_name
from engine.routes.filters import check_path, parse_when
from engine.routes.transforms import parse_transform
from engine.tls import ClientTLS, ListenTLS, TLSFileError, client_options, server_options

_SQLITE_URL = re.compile(r"^(sqlite(?:\+\w+)?:///)([^?]*)(\?.*)?$")
FILE_RETRY_S = 0.5  # a file destination's failed write is retried twice a second


@dataclass(slots=True)
class Builder:
    """Builds values, collecting problems; relative paths are taken from `base`."""

    base: Path | None = None  # the config file's folder (absolute); None: paths stay as given
    problems: list[str] = field(default_factory=list)

    def problem(self, path: str, text: str) -> None:
        self.problems.append(f"{path}: {text}")

    def file(self, text: str) -> str:
        """A path, relative to the config file's folder (an absolute one stays as it is)."""
        return str(self.base / text) if text and self.base is not None else text

    def database(self, db: Database) -> Database:
        """`sqlite:///var/engine.db` (relative) → `sqlite:////etc/hl7/var/engine.db`; absolute
        paths, `:memory:`, `file:` URIs and other databases stay as they are."""
        m = _SQLITE_URL.match(db.url)
        if m is None or self.base is None:
            return db
        prefix, database, query = m.groups()
        if not database or database == ":memory:" or database.startswith(("/", "file:")):
            return db
        return dataclasses.replace(db, url=f"{prefix}{self.file(database)}{query or ''}")

    def log(self, log: Logging) -> Logging:
        return dataclasses.replace(log, file=self.file(log.file))

    def channel(self, doc: ChannelDoc, path: str) -> Channel:
        listen = doc.listen
        accept = {pair for entry in doc.accept for pair in accept_entry(entry)}
        return Channel(
            name=doc.name, host=listen.host, port=listen.port, accept=frozenset(accept),
            versions=doc.versions, processing_ids=doc.processing_ids,
            ack=self.ack(doc.ack, f"{path}.ack"), limits=doc.limits,
            tolerate_missing_cr=doc.framing.tolerate_missing_cr,
            mllp_release=doc.framing.mllp_release,
            rules=self.rules(doc.ledger, f"{path}.ledger"),
            allow=tuple(ipaddress.ip_network(a, strict=False) for a in listen.allow),
            tls=self.listen_tls(listen.tls, f"{path}.listen.tls"), validation=doc.validation)

    def ack(self, ack: AckConfig, path: str) -> AckConfig:
        """`destination` goes with `mode: downstream`, and only with it."""
        if ack.mode == "downstream" and not ack.destination:
            self.problem(f"{path}.destination", "expected a non-empty string")
        elif ack.mode != "downstream" and ack.destination:
            self.problem(f"{path}.destination", "only with mode: downstream")
            return dataclasses.replace(ack, destination="")
        return ack

    def listen_tls(self, doc: ListenTLSDoc | None, path: str) -> ListenTLS | None:
        """`listen.tls: {cert, key, client_ca}`: files read and checked now (engine/tls.py)."""
        if doc is None:
            return None
        tls = ListenTLS(self.file(doc.cert), self.file(doc.key), self.file(doc.client_ca))
        try:
            server_options(tls)
        except TLSFileError as exc:
            self.problem(path, str(exc))
        return tls

    def client_tls(self, doc: ClientTLSDoc | None, path: str, host: str) -> ClientTLS | None:
        """A destination's `tls: {ca, cert, key, server_name}` (`{}`: the system's trust store)."""
        if doc is None:
            return None
        tls = ClientTLS(self.file(doc.ca), self.file(doc.cert), self.file(doc.key),
                        doc.server_name)
        if bool(tls.cert) != bool(tls.key):
            self.problem(path, "cert and key go together (a client certificate and its key)")
        elif host:
            try:
                client_options(tls, host)
            except TLSFileError as exc:
                self.problem(path, str(exc))
        return tls

    def rules(self, doc: LedgerRulesDoc, path: str) -> MappingRules:
        referred_to = "" if doc.referred_to is None else check_path(
            doc.referred_to, f"{path}.referred_to", self.problems) or ""
        return MappingRules(
            dict(doc.order_specialties or {}), frozenset(doc.closing_codes) | DEFAULT_CLOSING_CODES,
            doc.close_on_results,
            {code.upper(): name for code, name in (doc.specialties or {}).items()},
            referred_to, self.link_fields(doc.link_fields, f"{path}.link_fields"))

    def link_fields(self, items: tuple[Any, ...], path: str) -> tuple[str, ...]:
        """HL7 paths to a field, not SCH-26/27 (always tried first); a segment and field of at
        most 8 characters as `SEG-N`, the name history and `via` show."""
        out: list[str] = []
        for i, item in enumerate(items):
            found = check_path(item, f"{path}[{i}]", self.problems)
            if found is None:
                continue
            name = link_name(found)
            if name in ("SCH-26", "SCH-27"):
                self.problem(f"{path}[{i}]", f"{name} is always tried first; list other fields")
            elif len(name) > 8:
                self.problem(f"{path}[{i}]",
                             f"expected a segment and field like SCH.4, got {found!r}")
            else:
                out.append(found)
        return tuple(out)

    def ledger(self, doc: LedgerDoc) -> LedgerSettings:
        """The deadlines given replace those defaults, the others stay."""
        given = {code.upper(): days for code, days in (doc.deadlines_days or {}).items()}
        return LedgerSettings(doc.default_window_days, {**DEFAULT_DEADLINES, **given},
                              doc.sweep_interval_minutes)

    def http(self, doc: HttpDoc) -> Http:
        return Http(doc.listen.host, doc.listen.port, self.listen_tls(doc.tls, "http.tls"))

    def destination(self, doc: DestinationDoc, path: str) -> Destination:
        attempts = doc.retry.max_attempts
        if "max_attempts" not in doc.retry.model_fields_set and doc.max_attempts is not None:
            attempts = doc.max_attempts  # the older spelling, outside `retry`
        order_key = self.order(doc.order, f"{path}.order")
        if doc.type == "file":
            if doc.tls is not None:
                self.problem(f"{path}.tls", "only for mllp destinations")
            if doc.directory is None:
                self.problem(f"{path}.directory", "expected a non-empty string")
            return Destination(doc.name, doc.type, self.file(doc.directory or ""), attempts,
                               retry_initial_s=FILE_RETRY_S, retry_max_s=FILE_RETRY_S,
                               order_key=order_key)
        if doc.host is None:
            self.problem(f"{path}.host", "expected a non-empty string")
        return Destination(
            doc.name, doc.type, max_attempts=attempts, host=doc.host or "", port=doc.port or 0,
            ack_timeout_s=doc.ack_timeout_s, retry_initial_s=doc.retry.initial_s,
            retry_max_s=doc.retry.max_s, order_key=order_key,
            tls=self.client_tls(doc.tls, f"{path}.tls", doc.host or ""))

    def order(self, raw: Any, path: str) -> str:
        """`strict` (the default) → ""; `{per_key: PID.3.1}` → the HL7 path of the key."""
        if raw is None or raw == "strict":
            return ""
        if not isinstance(raw, dict):
            got = repr(raw) if isinstance(raw, str) else kind_of(raw)
            self.problem(path, f"expected strict or {{per_key: HL7 path}}, got {got}")
            return ""
        for key in raw:
            if key != "per_key":
                self.problems.append(unknown_key(f"{path}.{key}", ["per_key"]))
        if "per_key" not in raw:
            self.problem(f"{path}.per_key", "required: the HL7 path of the key, e.g. PID.3.1")
            return ""
        return check_path(raw["per_key"], f"{path}.per_key", self.problems) or ""

    def route(self, doc: RouteDoc, path: str, raw: dict[str, Any]) -> Route:
        source, events = self.route_input(doc, path, raw)
        if "on" in raw and "from" not in raw and "when" in raw:
            self.problem(f"{path}.when", "not allowed on an on: route (referral events are not "
                                         "filtered by message content)")
        when = parse_when(doc.when, f"{path}.when", self.problems)
        steps = parse_transform(doc.transform, f"{path}.transform", self.problems)
        return Route(doc.name, source, when, steps, doc.to, events)

    def route_input(self, doc: RouteDoc, path: str, raw: dict[str, Any]
                    ) -> tuple[str, tuple[str, ...]]:
        """(`from:` channel, `on:` events): a route has exactly one of them."""
        if ("from" in raw) == ("on" in raw):
            self.problem(path, "give either from: (a channel) or on: (referral events)"
                         + (", not both" if "from" in raw else ""))
            return "", ()
        if doc.on is None:
            return doc.source or "", ()
        for j, event in enumerate(doc.on):
            if event not in EVENT_NAMES:
                self.problem(f"{path}.on[{j}]", f"unknown referral event {event!r} (expected "
                                                f"one of: {', '.join(EVENT_NAMES)})")
        return "", tuple(dict.fromkeys(e for e in doc.on if e in EVENT_NAMES))
