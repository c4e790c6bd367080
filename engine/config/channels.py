"""`channels[]`: each channel's listener, accepted types, versions, ACK settings, limits,
framing, TLS, allow-list and ledger rules; the checks across channels.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from engine.config.model import (
    DEFAULT_VERSIONS,
    LENIENT,
    STRICT,
    AckConfig,
    Channel,
    Config,
    IPNetwork,
    Limits,
)
from engine.config.reader import Reader
from engine.mappings.rules import DEFAULT_CLOSING_CODES, MappingRules, link_name
from engine.routes.filters import check_path
from engine.tls import ClientTLS, ListenTLS, TLSFileError, client_options, server_options

_ACCEPT = re.compile(r"^([A-Z][A-Z0-9]{2})\^(\*|[A-Z0-9]{3}(?:-[A-Z0-9]{3})?)$")


def _expand_accept(entry: str, path: str, r: Reader) -> list[tuple[str, str]]:
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


def read_channel(raw: Any, path: str, r: Reader) -> Channel | None:
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
    tls = read_listen_tls(listen.get("tls"), f"{path}.listen.tls", r)
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


def _validation(raw: Any, path: str, r: Reader) -> str:
    """`validation: lenient | strict` (default lenient)."""
    if raw is None:
        return LENIENT
    if raw not in (LENIENT, STRICT):
        r.problem(path, f"expected {LENIENT} or {STRICT}, got {raw!r}")
        return LENIENT
    return STRICT if raw == STRICT else LENIENT


def read_listen_tls(raw: Any, path: str, r: Reader) -> ListenTLS | None:
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


def read_client_tls(raw: Any, path: str, host: str, r: Reader) -> ClientTLS | None:
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


def _networks(raw: Any, path: str, r: Reader) -> tuple[IPNetwork, ...]:
    """`listen.allow`: addresses and networks (`10.1.2.3`, `10.0.0.0/8`, `fd00::/8`)."""
    out: list[IPNetwork] = []
    for i, text in enumerate(r.strings(raw, path, ())):
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            r.problem(f"{path}[{i}]", f"expected an IP address or network like 10.0.0.0/8, "
                                      f"got {text!r}")
    return tuple(out)


def _ack(m: dict[str, Any], path: str, r: Reader) -> AckConfig:
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


def check_passthrough(channels: list[tuple[int, Channel]], config: Config, r: Reader) -> None:
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


def _rules(raw: Any, path: str, r: Reader) -> MappingRules:
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


def _link_fields(raw: Any, path: str, r: Reader) -> tuple[str, ...]:
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


def _code_map(table: Any, path: str, what: str, r: Reader) -> dict[str, str]:
    """A mapping of code: specialty (both non-empty strings)."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        r.problem(path, f"expected a mapping of {what}: specialty")
        return {}
    return {str(code): r.string(specialty, f"{path}.{code}") for code, specialty in table.items()}


def check_unique(channels: list[tuple[int, Channel]], r: Reader) -> None:
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


WILDCARD = "0.0.0.0"  # listens on every address, so it clashes with any host on its port
