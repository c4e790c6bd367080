"""The top-level sections besides `channels`: `database`, `ledger`, `http`, `retention`,
`destinations` and `routes`.
"""

from __future__ import annotations

import re
from typing import Any

from engine.config.channels import WILDCARD, read_client_tls, read_listen_tls
from engine.config.model import (
    DEFAULT_DATABASE,
    SYNCHRONOUS,
    Channel,
    Database,
    Destination,
    Http,
    Retention,
    Route,
)
from engine.config.reader import Reader, kind_of
from engine.ledger.lifecycle import EVENT_NAMES
from engine.ledger.settings import (
    DEFAULT_DEADLINES,
    DEFAULT_SWEEP_INTERVAL_MINUTES,
    DEFAULT_WINDOW_DAYS,
    LedgerSettings,
)
from engine.routes.filters import check_path, parse_when
from engine.routes.transforms import parse_transform


def read_database(raw: Any, r: Reader) -> Database:
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


def read_ledger(raw: Any, r: Reader) -> LedgerSettings:
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


def read_http(raw: Any, channels: list[tuple[int, Channel]], r: Reader) -> Http:
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
                read_listen_tls(m.get("tls"), "http.tls", r))
    clash = next((i for i, ch in channels if http.port and ch.port == http.port and (
        ch.host == http.host or WILDCARD in (ch.host, http.host))), None)
    if clash is not None:
        r.problem("http.listen.port", f"already used by channels[{clash}]")
    return http


def read_retention(raw: Any, r: Reader) -> Retention:
    """`retention: {message_bodies_days}`: absent or null keeps bodies for ever."""
    m = r.mapping(raw, "retention", {"message_bodies_days"})
    days = m.get("message_bodies_days")
    if days is None:
        return Retention()
    return Retention(_days(days, "retention.message_bodies_days", 36500, r))


def _days(value: Any, path: str, most: int, r: Reader) -> float | None:
    """A number of days above 0 (fractions allowed: 0.25 is six hours), or None (a problem)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= most:
        return value
    r.problem(path, f"expected a number of days above 0 and at most {most}, got {value!r}")
    return None


def read_destinations(raw: Any, r: Reader) -> tuple[Destination, ...]:
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
                tls=read_client_tls(m.get("tls"), f"{path}.tls", host, r),
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


def _order(raw: Any, path: str, r: Reader) -> str:
    """`strict` (the default) → ""; `{per_key: PID.3.1}` → the HL7 path of the key."""
    if raw is None or raw == "strict":
        return ""
    if not isinstance(raw, dict):
        got = repr(raw) if isinstance(raw, str) else kind_of(raw)
        r.problem(path, f"expected strict or {{per_key: HL7 path}}, got {got}")
        return ""
    r.mapping(raw, path, {"per_key"})
    if "per_key" not in raw:
        r.problem(f"{path}.per_key", "required: the HL7 path of the key, e.g. PID.3.1")
        return ""
    return check_path(raw["per_key"], f"{path}.per_key", r.problems) or ""


def read_routes(raw: Any, channels: set[str], destinations: set[str], r: Reader
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


def _route_input(m: dict[str, Any], path: str, channels: set[str], r: Reader
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
