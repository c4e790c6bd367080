"""The checks across sections, on values that validated: channel names and ports unique, the
web face's port free, routes naming channels and destinations that exist, and a pass-through
channel fed by a route to an MLLP destination.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.config.model import Channel, Config, Http, Route

WILDCARD = "0.0.0.0"  # listens on every address, so it clashes with any host on its port

Problems = list[str]


def _clash(host: str, port: int, other_host: str, other_port: int) -> bool:
    return bool(port) and port == other_port and (host == other_host or
                                                  WILDCARD in (host, other_host))


def unique_channels(channels: list[tuple[int, Channel]], problems: Problems) -> None:
    """A second use of a name, or of a host and port, points back at the first channel."""
    seen_names: dict[str, int] = {}
    seen_ports: dict[tuple[str, int], int] = {}
    for i, ch in channels:
        if ch.name in seen_names:
            problems.append(f"channels[{i}].name: duplicate of channels[{seen_names[ch.name]}].name")
        seen_names.setdefault(ch.name, i)
        clash = next((j for (host, port), j in seen_ports.items()
                      if _clash(ch.host, ch.port, host, port)), None)
        if clash is not None:
            problems.append(f"channels[{i}].listen.port: already used by channels[{clash}]")
        seen_ports.setdefault((ch.host, ch.port), i)


def http_port_free(http: Http, channels: list[tuple[int, Channel]], problems: Problems) -> None:
    clash = next((i for i, ch in channels if _clash(http.host, http.port, ch.host, ch.port)), None)
    if clash is not None:
        problems.append(f"http.listen.port: already used by channels[{clash}]")


def unique_destinations(names: Iterable[tuple[int, str]], problems: Problems) -> None:
    seen: set[str] = set()
    for i, name in names:
        if name in seen:
            problems.append(f"destinations[{i}].name: duplicate destination name {name!r}")
        seen.add(name)


def route_targets(routes: list[tuple[int, Route]], channels: set[str], destinations: set[str],
                  problems: Problems) -> None:
    """Each route's `from:` is a channel and each of its `to:` a destination."""
    for i, route in routes:
        if route.source and route.source not in channels:
            problems.append(f"routes[{i}].from: no channel named {route.source!r}")
        for j, dest in enumerate(route.to):
            if dest not in destinations:
                problems.append(f"routes[{i}].to[{j}]: no destination named {dest!r}")


def passthrough(channels: list[tuple[int, Channel]], config: Config, problems: Problems) -> None:
    """`ack: {mode: downstream}` needs an MLLP destination that a route of the channel feeds."""
    kinds = {d.name: d.type for d in config.destinations}
    for i, ch in channels:
        name, path = ch.ack.passthrough, f"channels[{i}].ack.destination"
        if not name:
            continue
        if name not in kinds:
            problems.append(f"{path}: no destination named {name!r}")
        elif kinds[name] != "mllp":
            problems.append(f"{path}: {name!r} is a {kinds[name]} destination; only an mllp "
                            "destination answers with an ACK")
        elif not any(rt.source == ch.name and name in rt.to for rt in config.routes):
            problems.append(f"{path}: no route from channel {ch.name!r} sends to {name!r}")
