"""TLS on an MLLP listener (`channels[].listen.tls`, docs/tls.md): the channel's
`MLLPServerFactory` under Twisted's memory-BIO TLS, the same whether the port was listened on
or a connection was adopted from the acceptor (`workers:`).

The MLLP protocol sees the TLS layer as its transport: `getPeer()` is still the TCP peer (for
`listen.allow` and the logs), and a failed handshake reaches its `connectionLost` as OpenSSL's
error (`failure_text`).  Imported only for a TLS channel, so plain TCP never loads OpenSSL.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure

from engine.tls import ListenTLS, handshake_words, server_options


class _Connection(BufferingTLSTransport):
    """One TLS connection that closes at once when the MLLP protocol closes it."""

    aborted = False

    def loseConnection(self) -> None:  # noqa: N802 - Twisted's interface
        # Twisted would wait for the peer's close_notify before closing TCP, so a dead or
        # silent peer would hold the connection (and a `max_connections` place) for ever,
        # idle timeout or not.  The closer need not wait for it (RFC 8446, section 6.1): our
        # close_notify is written, then TCP closes once the writes are out.  (Before the
        # handshake is done, Twisted aborts instead: nothing more to do then.)
        super().loseConnection()
        tcp: Any = self.transport
        if tcp is not None and not self.aborted:
            tcp.loseConnection()

    def abortConnection(self) -> None:  # noqa: N802 - Twisted's interface
        self.aborted = True
        super().abortConnection()  # type: ignore[no-untyped-call]


class TLSListenFactory(TLSMemoryBIOFactory):
    """A channel's listening factory under TLS; `wrappedFactory` is its MLLPServerFactory."""

    protocol = _Connection


def tls_factory(factory: Any, tls: ListenTLS, clock: Any) -> TLSListenFactory:
    """`factory`'s connections under TLS, with the channel's certificate (and client CA)."""
    return TLSListenFactory(server_options(tls), False, factory, clock)


def failure_text(reason: Failure) -> str | None:
    """OpenSSL's short reason when a connection was lost to TLS ("wrong version number",
    "peer did not return a certificate", "certificate verify failed"); None otherwise."""
    error = reason.value
    return handshake_words(error, "") if isinstance(error, SSL.Error) else None
