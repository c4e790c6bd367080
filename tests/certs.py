"""Throw-away certificates for the TLS tests (trustme): a CA, a server certificate for
127.0.0.1/localhost, a client certificate, and a second, unrelated CA with a client of its own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate (PEM)
    server_cert: Path  # 127.0.0.1 and localhost, signed by `ca` (chain, leaf first)
    server_key: Path
    client_cert: Path  # signed by `ca`
    client_key: Path
    other_ca: Path  # an unrelated CA
    stranger_cert: Path  # a client certificate signed by `other_ca`
    stranger_key: Path


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client.example.org")
    stranger = other.issue_cert("stranger.example.org")
    pki = Pki(*(directory / name for name in (
        "ca.pem", "server.pem", "server.key", "client.pem", "client.key", "other-ca.pem",
        "stranger.pem", "stranger.key")))
    ca.cert_pem.write_to_path(str(pki.ca))
    other.cert_pem.write_to_path(str(pki.other_ca))
    for cert, cert_path, key_path in ((server, pki.server_cert, pki.server_key),
                                      (client, pki.client_cert, pki.client_key),
                                      (stranger, pki.stranger_cert, pki.stranger_key)):
        cert_path.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key_path))
    return pki
