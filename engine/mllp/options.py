"""What an MLLP listener needs from its channel: `ListenerOptions` (framing tolerance, size,
time and connection limits, the peers it takes, TLS), built by the service from the channel's
configuration, so the server does not depend on the configuration's types.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from engine.tls import ListenTLS

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ListenerOptions:
    """One channel's listener: its name (for logs) and every setting the protocol obeys."""

    name: str
    max_frame_bytes: int
    idle_timeout_s: float  # 0: never closed for idleness
    max_connections: int
    max_queued_frames: int
    frame_timeout_s: float  # a frame must be complete this long after its 0x0B (0: off)
    max_connections_per_address: int  # from one peer address (0: only max_connections)
    tolerate_missing_cr: bool = True
    mllp_release: int = 1  # 2: the commit ACK/NAK before the HL7 ACK
    allow: tuple[IPNetwork, ...] = ()  # the peers it takes; empty: any
    tls: ListenTLS | None = None  # None: plain TCP

    def allows(self, host: str) -> bool:
        """May a peer at this address connect?"""
        return peer_allowed(self.allow, host)


def peer_allowed(allow: tuple[IPNetwork, ...], host: str) -> bool:
    """Is `host` in one of the `allow` networks (any host when empty)?  IPv4 seen as
    IPv6-mapped counts as IPv4; a host that is not an IP address is refused."""
    if not allow:
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in allow)
