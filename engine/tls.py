"""TLS for MLLP (docs/tls.md): listeners (`channels[].listen.tls`, with mutual TLS when a
`client_ca` is given) and MLLP destinations (`destinations[].tls`).

Certificates and keys are PEM files, read once when the configuration is loaded, so a bad file
is a configuration error with its YAML path (`check-config` reports it) and never a failure at
the first connection.  OpenSSL is imported only when some TLS is configured.
`handshake_words` puts why a TLS connection failed in the short words that an attempt's error
and the log show.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import EngineError


class TLSFileError(EngineError):
    """A certificate, key or CA file that cannot be read or is not what it should be."""


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
        raise TLSFileError(f"cannot read {path} ({exc.strerror or type(exc).__name__})") from exc
    if b"-----BEGIN " not in data:
        raise TLSFileError(f"{path} is not a PEM {what}")
    return data


def _certificates(path: str) -> list[Any]:
    ssl = _twisted_ssl()

    data = _read(path, "certificate")
    pems = [b"-----BEGIN CERTIFICATE-----" + part.split(b"-----END CERTIFICATE-----")[0]
            + b"-----END CERTIFICATE-----\n"
            for part in data.split(b"-----BEGIN CERTIFICATE-----")[1:]]
    if not pems:
        raise TLSFileError(f"{path} holds no PEM certificate")
    try:
        return [ssl.Certificate.loadPEM(pem) for pem in pems]
    except Exception as exc:  # noqa: BLE001 - OpenSSL's errors carry no common base we import
        raise TLSFileError(f"{path}: not a valid certificate") from exc


def _private(cert: str, key: str) -> tuple[Any, list[Any]]:
    """(the PrivateCertificate of the leaf and key, the rest of the chain)."""
    from OpenSSL import SSL, crypto
    ssl = _twisted_ssl()

    chain = _certificates(cert)
    key_pem = _read(key, "private key")
    try:
        pair = ssl.KeyPair.load(key_pem, crypto.FILETYPE_PEM)
    except Exception as exc:  # noqa: BLE001
        raise TLSFileError(f"{key}: not a valid private key") from exc
    context = SSL.Context(SSL.TLS_METHOD)
    context.use_certificate(chain[0].original.to_cryptography())
    try:
        context.use_privatekey(pair.original.to_cryptography_key())  # must fit the cert
        context.check_privatekey()
    except SSL.Error as exc:
        raise TLSFileError(f"{key} does not match the certificate in {cert}") from exc
    private = ssl.PrivateCertificate.fromCertificateAndKeyPair(chain[0], pair)
    return private, chain[1:]


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
    return ssl.optionsForClientTLS(tls.server_name or host, trustRoot=trust,
                                   clientCertificate=client)


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
