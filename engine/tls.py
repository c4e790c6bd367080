"""TLS for MLLP (docs/tls.md): listeners (`channels[].listen.tls`, with mutual TLS when a
`client_ca` is given) and MLLP destinations (`destinations[].tls`).

Certificates and keys are PEM files, read once when the configuration is loaded, so a bad file
is a configuration error with its YAML path (`check-config` reports it) and never a failure at
the first connection.  OpenSSL is imported only when some TLS is configured.
`handshake_words` puts why a TLS connection failed in the short words that an attempt's error
and the log show; `ClientCreator.verify_detail` adds why the server's certificate was not trusted.
An encrypted key is refused, never prompted for.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer  # type: ignore[import-untyped]

from engine.errors import EngineError


class TLSFileError(EngineError):
    """A certificate, key or CA file that cannot be read or is not what it should be: `path`,
    and `problem` (unreadable, not_pem, no_certificate, invalid_certificate, invalid_key,
    encrypted or mismatch), with `reason` for an unreadable file."""

    def __init__(self, message: str, path: str = "", problem: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.path, self.problem, self.reason = path, problem, reason


@dataclass(frozen=True, slots=True)
class ListenTLS:
    """`listen.tls`: the server's certificate (chain, leaf first) and key; with `client_ca`,
    every client must present a certificate that CA signed (mutual TLS)."""

    cert: str
    key: str
    client_ca: str = ""


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """A destination's `tls`: trust `ca` (default: the system's trust store), check the server's
    certificate names `server_name` (default: the destination's host), and present `cert`/`key`
    when the downstream asks for a client certificate."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""


def _twisted_ssl() -> Any:
    """twisted.internet.ssl, imported when TLS is configured (its API is untyped)."""
    from twisted.internet import ssl

    return ssl


def _read(path: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TLSFileError(f"cannot read {path} ({reason})", path, "unreadable", reason) from exc
    if b"-----BEGIN " not in data:
        raise TLSFileError(f"{path} is not a PEM {what}", path, "not_pem")
    return data


def _certificates(path: str) -> list[Any]:
    ssl = _twisted_ssl()

    data = _read(path, "certificate")
    pems = [b"-----BEGIN CERTIFICATE-----" + part.split(b"-----END CERTIFICATE-----")[0]
            + b"-----END CERTIFICATE-----\n"
            for part in data.split(b"-----BEGIN CERTIFICATE-----")[1:]]
    if not pems:
        raise TLSFileError(f"{path} holds no PEM certificate", path, "no_certificate")
    try:
        return [ssl.Certificate.loadPEM(pem) for pem in pems]
    except Exception as exc:  # noqa: BLE001 - OpenSSL's errors carry no common base we import
        raise TLSFileError(f"{path}: not a valid certificate", path,
                           "invalid_certificate") from exc


def _private(cert: str, key: str) -> tuple[Any, list[Any]]:
    """(the PrivateCertificate of the leaf and key, the rest of the chain)."""
    from OpenSSL import SSL, crypto
    ssl = _twisted_ssl()

    chain = _certificates(cert)
    key_pem = _read(key, "private key")
    try:
        pair = ssl.KeyPair(crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem,
                                                  passphrase=_no_passphrase))
    except _Encrypted:
        raise TLSFileError(f"{key}: encrypted (give an unencrypted key)", key,
                           "encrypted") from None
    except Exception as exc:  # noqa: BLE001
        raise TLSFileError(f"{key}: not a valid private key", key, "invalid_key") from exc
    context = SSL.Context(SSL.TLS_METHOD)
    context.use_certificate(chain[0].original.to_cryptography())
    try:
        context.use_privatekey(pair.original.to_cryptography_key())  # must fit the cert
        context.check_privatekey()
    except SSL.Error as exc:
        raise TLSFileError(f"{key} does not match the certificate in {cert}", key,
                           "mismatch") from exc
    private = ssl.PrivateCertificate.fromCertificateAndKeyPair(chain[0], pair)
    return private, chain[1:]


class _Encrypted(Exception):
    """The key asks for a passphrase: the engine never prompts for one."""


def _no_passphrase(*_asked: object) -> bytes:
    raise _Encrypted


def server_options(tls: ListenTLS) -> Any:
    """The listener's IOpenSSLContextFactory."""
    ssl = _twisted_ssl()

    private, chain = _private(tls.cert, tls.key)
    trusted = _certificates(tls.client_ca) if tls.client_ca else []
    return ssl.CertificateOptions(
        privateKey=private.privateKey.original, certificate=private.original,
        extraCertChain=[c.original for c in chain],
        verify=bool(trusted), requireCertificate=bool(trusted),
        caCerts=[c.original for c in trusted] or None)


def client_options(tls: ClientTLS, host: str) -> Any:
    """The destination's IOpenSSLClientConnectionCreator (the server's name is checked)."""
    ssl = _twisted_ssl()

    trust: Any
    if tls.ca:
        roots = _certificates(tls.ca)
        trust = ssl.trustRootFromCertificates(roots)
    else:
        trust = ssl.platformTrust()
    client = _private(tls.cert, tls.key)[0] if tls.cert else None
    return ClientCreator(ssl.optionsForClientTLS(tls.server_name or host, trustRoot=trust,
                                                 clientCertificate=client))


@implementer(IOpenSSLClientConnectionCreator)
class ClientCreator:
    """Twisted's client TLS options, remembering each connection by its TLS protocol, so a
    failed verification can say why the server's certificate was not trusted."""

    def __init__(self, options: Any) -> None:
        self.options = options
        self.connections: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def clientConnectionForTLS(self, tls_protocol: Any) -> Any:
        connection = self.options.clientConnectionForTLS(tls_protocol)
        self.connections[tls_protocol] = connection
        return connection

    def verify_detail(self, tls_protocol: Any) -> str:
        """OpenSSL's reason the server's chain was refused ("unable to get local issuer
        certificate"), found by verifying the chain it sent again; "" when there is none."""
        from OpenSSL import crypto

        connection = self.connections.get(tls_protocol)
        chain = connection.get_peer_cert_chain() if connection is not None else None
        if connection is None or not chain:
            return ""
        store = connection.get_context().get_cert_store()
        try:
            crypto.X509StoreContext(store, chain[0], chain[1:]).verify_certificate()
        except crypto.X509StoreContextError as exc:
            return str(exc)
        return ""


def handshake_words(exc: BaseException | None, server_name: str) -> str | None:
    """Why a TLS connection failed, in short words (OpenSSL's reasons, never any bytes that
    crossed the wire); None when `exc` is not a TLS error (a plain lost connection)."""
    from OpenSSL import SSL
    from service_identity import VerificationError

    if isinstance(exc, VerificationError):  # the chain is trusted, the name is not in it
        return f"certificate does not match {server_name}"
    if not isinstance(exc, SSL.Error):
        return None
    errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    reasons = [str(e[-1]) for e in errors if isinstance(e, tuple) and e and e[-1]]
    if reasons:  # [(library, function, reason)], e.g. "certificate verify failed"
        return "; ".join(dict.fromkeys(reasons))
    last = exc.args[-1] if exc.args else None
    return last if isinstance(last, str) and last else type(exc).__name__
