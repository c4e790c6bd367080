"""`send`: HL7 files over MLLP (optionally TLS), one line per ACK (MSA-1, MSA-2, ERR-3).

It connects with the engine's own MLLP client and TLS settings (`engine.mllp.session` on
`engine.mllp.client`, `engine.tls`), on the reactor under `task.react`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cli.common import EXIT_CONFIG, EXIT_NOT_OK, EXIT_OK
from engine.config import ConfigError
from engine.mllp.framing import COMMIT_ACK, COMMIT_NAK

if TYPE_CHECKING:
    from engine.mllp.session import MLLPSession, SessionFailed


def cmd_send(args: argparse.Namespace) -> int:
    from twisted.internet import task

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
    creator = _tls_creator(args, host)
    try:
        task.react(_session, (args, host, int(port), creator, payloads))
    except SystemExit as done:  # react always ends so, with the exit code
        return done.code if isinstance(done.code, int) else EXIT_NOT_OK


async def _session(reactor: Any, args: argparse.Namespace, host: str, port: int, creator: Any,
                   payloads: list[tuple[str, bytes]]) -> None:
    """The whole exchange on the reactor; its exit code leaves as `SystemExit`, as react wants."""
    from engine.mllp.session import MLLPSession, SessionFailed

    session = MLLPSession(reactor, host, port, args.timeout, creator, args.server_name or "")
    try:
        await session.open()
        code = await _send_all(session, payloads, args)
    except SessionFailed as failed:
        code = _send_failed(args, failed, session.frames > 0)
    await session.close()
    raise SystemExit(code)


def _send_failed(args: argparse.Namespace, failed: SessionFailed, answered: bool) -> int:
    """One stderr line for a connection that failed while opening or later, before or after
    its first ACK.  TLS 1.3 shows a refused client certificate after the client's side of the
    handshake, so a TLS error before any ACK is a failed handshake too."""
    if failed.tls and not answered:
        print(f"--to {args.to}: TLS handshake failed ({failed.words})", file=sys.stderr)
        return EXIT_CONFIG
    if failed.opening:
        print(f"--to {args.to}: cannot connect ({failed.words})", file=sys.stderr)
        return EXIT_CONFIG
    tls = "TLS: " if failed.tls else ""
    print(f"{args.to}: connection lost ({tls}{failed.words})", file=sys.stderr)
    return EXIT_NOT_OK


def _tls_creator(args: argparse.Namespace, host: str) -> Any:
    """`send`'s TLS, as a destination's `tls` (`engine.tls.client_options`): None without any
    TLS option.  The server's certificate must chain to --ca (or a system CA) and name
    --server-name (or the --to host).  A file that will not do is a ConfigError naming the
    option and the file."""
    from engine.tls import ClientTLS, TLSFileError, client_options

    if not (args.tls or args.ca or args.cert or args.key or args.server_name):
        return None
    if bool(args.cert) != bool(args.key):
        raise ConfigError(["--cert needs --key" if args.cert else "--key needs --cert"])
    tls = ClientTLS(args.ca or "", args.cert or "", args.key or "", args.server_name or "")
    try:
        return client_options(tls, host)
    except TLSFileError as exc:
        raise ConfigError([_file_problem(args, exc)]) from None


_KEY_PROBLEMS = ("invalid_key", "encrypted", "mismatch")


def _file_problem(args: argparse.Namespace, exc: Any) -> str:
    """A TLS file's problem as `send` says it: the option, the file, what is wrong."""
    option = ("--key" if exc.problem in _KEY_PROBLEMS or exc.path not in (args.ca, args.cert)
              else "--ca" if exc.path == args.ca else "--cert")
    what = {"unreadable": f"cannot read ({exc.reason})", "not_pem": "not a PEM file",
            "invalid_key": "not a valid private key",
            "encrypted": "encrypted (give an unencrypted key)",
            "mismatch": "does not match the certificate in --cert"}.get(
        exc.problem, "not a valid CA certificate" if option == "--ca" else
        "not a valid certificate")
    return f"{option} {exc.path}: {what}"


async def _send_all(client: MLLPSession, payloads: list[tuple[str, bytes]],
                    args: argparse.Namespace) -> int:
    """Send each file in turn and print its ACKs (MSA-1, MSA-2, ERR-3); 1 if any was not AA/CA."""
    worst = EXIT_OK
    for name, payload in payloads:
        if not args.as_is:
            payload = payload.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        expected = _expected_acks(payload)
        wait = args.timeout if expected else min(args.timeout, 1.0)
        client.send(payload)
        acks = await client.receive(1, wait)
        if acks and acks[0] in _COMMIT_WORDS:  # MLLP release 2: the transport's answer first
            print(f"{name}: {_COMMIT_WORDS[acks[0]]}")
            worst = worst if acks[0] == COMMIT_ACK else EXIT_NOT_OK
            acks = await client.receive(1, wait)
        if acks and expected > 1 and _ack_fields(acks[0])[0] == "CA":
            acks += await client.receive(1, args.timeout)  # the application ACK follows a CA
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
