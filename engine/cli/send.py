"""`send`: HL7 files over MLLP (optionally TLS), one line per ACK (MSA-1, MSA-2, ERR-3).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import ConfigError
from engine.mllp.framing import COMMIT_ACK, COMMIT_NAK

if TYPE_CHECKING:
    import ssl

    from engine.mllp.blocking import MLLPClient
from engine.cli.common import EXIT_CONFIG, EXIT_NOT_OK, EXIT_OK


def cmd_send(args: argparse.Namespace) -> int:
    from engine.mllp.blocking import MLLPClient

    host, _, port = args.to.rpartition(":")
    if not host or not port.isdigit():
        print(f"--to: expected HOST:PORT, got {args.to!r}", file=sys.stderr)
        return EXIT_CONFIG
    payloads: list[tuple[str, bytes]] = []
    for name in args.files:  # every file is read before anything is sent
        try:
            payloads.append((name, Path(name).read_bytes()))
        except OSError as exc:
            print(f"{name}: cannot read ({exc.strerror or type(exc).__name__})", file=sys.stderr)
    if len(payloads) < len(args.files):
        return EXIT_CONFIG
    context = _tls_context(args)
    try:
        client = MLLPClient(host, int(port), args.timeout, context, args.server_name)
    except OSError as exc:
        return _send_failed(args, exc, None)
    with client:
        try:
            return _send_all(client, payloads, args)
        except OSError as exc:
            return _send_failed(args, exc, client.frames > 0)


def _send_failed(args: argparse.Namespace, exc: OSError, answered: bool | None) -> int:
    """One stderr line for a connection that failed while opening (`answered` None) or later,
    before or after its first ACK.  TLS 1.3 shows a refused client certificate at the first
    read, so a TLS error before any ACK is a failed handshake too."""
    import ssl

    tls = isinstance(exc, ssl.SSLError)
    reason = _ssl_reason(exc) if isinstance(exc, ssl.SSLError) else (
        exc.strerror or type(exc).__name__)  # (isinstance again: mypy narrows on it)
    if tls and not answered:
        print(f"--to {args.to}: TLS handshake failed ({reason})", file=sys.stderr)
        return EXIT_CONFIG
    if answered is None:
        print(f"--to {args.to}: cannot connect ({reason})", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.to}: connection lost ({'TLS: ' if tls else ''}{reason})", file=sys.stderr)
    return EXIT_NOT_OK


class _EncryptedKey(Exception):
    """--key asks for a passphrase: `send` never prompts for one."""


def _no_passphrase() -> str:
    raise _EncryptedKey


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """`send`'s TLS: None without any TLS option.  The server's certificate must chain to
    --ca (or a system CA) and name --server-name (or the --to host).  A file that will not do
    is a ConfigError naming the option and the file."""
    import ssl

    if not (args.tls or args.ca or args.cert or args.key or args.server_name):
        return None
    if bool(args.cert) != bool(args.key):
        raise ConfigError(["--cert needs --key" if args.cert else "--key needs --cert"])
    for option, path in (("--ca", args.ca), ("--cert", args.cert), ("--key", args.key)):
        if path:
            _check_pem(option, path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if args.ca:
        _load_certificates(context, "--ca", args.ca, "CA certificate")
    else:
        context.load_default_certs()
    if args.cert:
        _load_certificates(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), "--cert", args.cert,
                           "certificate")
        try:
            context.load_cert_chain(args.cert, args.key, password=_no_passphrase)
        except _EncryptedKey:
            raise ConfigError([f"--key {args.key}: encrypted (give an unencrypted key)"]) from None
        except ssl.SSLError as exc:
            raise ConfigError([f"--key {args.key}: does not match the certificate in --cert"
                               if exc.reason == "KEY_VALUES_MISMATCH"
                               else f"--key {args.key}: not a valid private key"]) from None
    return context


def _check_pem(option: str, path: str) -> None:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{option} {path}: cannot read "
                           f"({exc.strerror or type(exc).__name__})"]) from None
    if b"-----BEGIN " not in data:
        raise ConfigError([f"{option} {path}: not a PEM file"])


def _load_certificates(context: ssl.SSLContext, option: str, path: str, what: str) -> None:
    import ssl

    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise ConfigError([f"{option} {path}: not a valid {what}"]) from None


def _ssl_reason(exc: ssl.SSLError) -> str:
    """OpenSSL's words without their codes: "[SSL: X] certificate verify failed: ... (_ssl.c:1)"
    becomes "certificate verify failed: ..."."""
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    text = re.sub(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", str(exc.strerror or exc))
    return text or type(exc).__name__


def _send_all(client: MLLPClient, payloads: list[tuple[str, bytes]], args: argparse.Namespace) -> int:
    """Send each file in turn and print its ACKs (MSA-1, MSA-2, ERR-3); 1 if any was not AA/CA."""
    worst = EXIT_OK
    for name, payload in payloads:
        if not args.as_is:
            payload = payload.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        expected = _expected_acks(payload)
        wait = args.timeout if expected else min(args.timeout, 1.0)
        acks = client.exchange(payload, 1, wait)
        if acks and acks[0] in _COMMIT_WORDS:  # MLLP release 2: the transport's answer first
            print(f"{name}: {_COMMIT_WORDS[acks[0]]}")
            worst = worst if acks[0] == COMMIT_ACK else EXIT_NOT_OK
            acks = client.receive(1, wait)
        if acks and expected > 1 and _ack_fields(acks[0])[0] == "CA":
            acks += client.receive(1, args.timeout)  # the application ACK follows a CA
        if not acks and client.closed:  # the rest cannot be sent either
            print(f"{name}: no ACK (the connection was closed by {args.to})")
            return EXIT_NOT_OK
        if not acks:
            print(f"{name}: no ACK" + (" (MSH-15/16 ask for none)" if not expected
                                       else f" within {args.timeout:g} s"))
            worst = worst if not expected else EXIT_NOT_OK
        for ack in acks:
            msa1, msa2, err3 = _ack_fields(ack)
            print(f"{name}: {msa1} {msa2} {err3}".rstrip())
            if msa1 not in ("AA", "CA"):
                worst = EXIT_NOT_OK
    return worst


_COMMIT_WORDS = {COMMIT_ACK: "MLLP commit ACK (stored)", COMMIT_NAK: "MLLP commit NAK (not stored)"}


def _expected_acks(payload: bytes) -> int:
    from engine.ack import ACCEPTED, ack_codes
    from engine.errors import HL7Error
    from engine.parsing import parse

    try:
        msg = parse(payload)
    except HL7Error:
        return 1
    msh15, msh16 = msg.get("MSH.15"), msg.get("MSH.16")
    if not msh15 and not msh16:
        return 1
    # The most ACKs the receiver may send: accept ACK unless NE, application ACK unless NE.
    return len(ack_codes(ACCEPTED, msh15 or "AL", "AL" if msh16 not in ("", "NE") else "NE")) \
        if msh15 != "NE" else int(msh16 not in ("", "NE"))


def _ack_fields(ack: bytes) -> tuple[str, str, str]:
    from engine.errors import HL7Error
    from engine.parsing import parse

    try:
        msg = parse(ack)
    except HL7Error:
        return "?", "", "(unreadable ACK)"
    return msg.get("MSA.1"), msg.get("MSA.2"), msg.get("ERR.3") or msg.get("ERR.1.4")
