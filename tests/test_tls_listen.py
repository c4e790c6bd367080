"""TLS on MLLP listeners (`channels[].listen.tls`, mutual with `client_ca`) and `hl7-engine send`'s
TLS options, end to end: the real engine (one process, and two with `workers: 2`) over loopback
TCP into a real SQLite file, with throw-away certificates (tests/certs.py).

A client the channel's TLS refuses (plain TCP, no client certificate, one from another CA) gets
no ACK, nothing of it is stored, and the engine logs `mllp.tls_failed` once, with the channel,
the TCP peer and OpenSSL's reason, and keeps serving.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from certs import Pki, make_pki
from enginectl import ROOT, SAMPLES, Engine, run_cli, sample_payload, stored_messages, write_config
from OpenSSL import SSL
from twisted.internet import task
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from engine.config import Channel
from engine.mllp.blocking import MLLPClient
from engine.mllp.server import MLLPServerFactory, listening_factory
from engine.mllp.tls_listen import TLSListenFactory, failure_text
from engine.parsing import parse
from engine.service import listener_options
from engine.tls import ListenTLS

SAMPLE = str(SAMPLES / "ref_i12_v251.hl7")  # MSH-10 REF-I12-V251


@pytest.fixture(name="pki", scope="module")
def pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls(pki: Pki, mutual: bool = False) -> dict[str, str]:
    tls = {"cert": str(pki.server_cert), "key": str(pki.server_key)}
    return {**tls, "client_ca": str(pki.ca)} if mutual else tls


@pytest.fixture(name="start")
def start_fixture(tmp_path: Path, sqlite_url: str) -> Iterator[Any]:
    """start(workers, tls, **channel) -> a running engine whose one channel listens on
    127.0.0.1 under that `listen.tls`; stopped after the test."""
    engines: list[Engine] = []

    def start(workers: int, tls: dict[str, str], **channel: Any) -> Engine:
        config = write_config(tmp_path, sqlite_url, top={"workers": workers},
                              listen={"host": "127.0.0.1", "port": 0, "tls": tls}, **channel)
        engines.append(Engine(config).start())
        return engines[-1]

    yield start
    for engine in engines:
        engine.stop()


def _send(engine: Engine, *options: str) -> subprocess.CompletedProcess[str]:
    return run_cli("send", SAMPLE, "--to", f"127.0.0.1:{engine.port}", *options, config=engine.config)


def _context(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def _local(client: MLLPClient) -> str:
    """The client's end as the engine sees its peer."""
    return f"127.0.0.1:{client.sock.getsockname()[1]}"


def _stored(url: str) -> list[tuple[str, str]]:
    return [(str(c), str(p)) for c, p in stored_messages(url, "control_id", "peer")]


def _stopped(engine: Engine) -> list[dict[str, Any]]:
    """Stop the engine (every process flushes its log) and return its whole log; it must have
    written no traceback."""
    assert engine.stop() == 0
    assert "Traceback" not in engine.stderr
    return engine.events()


def _tls_failures(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted((e["channel"], e["peer"], e["error"]) for e in events
                  if e["event"] == "mllp.tls_failed")


# --- units: which factory a channel listens with, and what counts as a TLS failure ------------


def _channel(tls: ListenTLS | None) -> Channel:
    return Channel(name="test", host="127.0.0.1", port=0, accept=frozenset({("REF", "I12")}),
                   tls=tls)


def _refuse(payload: bytes, peer: str, reply: Any) -> Any:
    raise AssertionError("no frame reaches the handler")


def test_a_plain_channel_listens_with_its_own_factory_and_a_tls_one_wraps_it(pki: Pki) -> None:
    """Plain TCP keeps the bare MLLP factory (nothing added per connection); `listen.tls` puts
    the same factory under TLS."""
    plain = MLLPServerFactory(listener_options(_channel(None)), _refuse, task.Clock())
    assert listening_factory(plain) is plain
    listen_tls = ListenTLS(str(pki.server_cert), str(pki.server_key))
    tls = MLLPServerFactory(listener_options(_channel(listen_tls)), _refuse, task.Clock())
    wrapped = listening_factory(tls)
    assert isinstance(wrapped, TLSListenFactory) and wrapped.wrappedFactory is tls


def test_failure_text_is_openssl_reason_or_none() -> None:
    """An OpenSSL error gives its reason text (without library and function names); a closed
    connection is no TLS failure."""
    queue = [("SSL routines", "", "wrong version number"),
             ("SSL routines", "", "wrong version number")]
    assert failure_text(Failure(SSL.Error(queue))) == "wrong version number"
    assert failure_text(Failure(SSL.SysCallError(104, "ECONNRESET"))) == "ECONNRESET"
    assert failure_text(Failure(ConnectionDone())) is None


# --- end to end -------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_send_with_the_ca_is_accepted_and_stored_and_another_ca_fails(
        start: Any, pki: Pki, workers: int) -> None:
    """`send --ca` to a TLS channel gets AA and the message is stored; `send --ca` with a CA that
    did not sign the server's certificate fails its handshake: exit 2, one line on stderr naming
    the address and the reason, nothing sent."""
    engine = start(workers, _tls(pki))
    sent = _send(engine, "--ca", str(pki.ca))
    assert (sent.returncode, sent.stdout, sent.stderr) == (0, f"{SAMPLE}: AA REF-I12-V251\n", "")
    tail = run_cli("tail", "--json", config=engine.config)
    assert [(r["control_id"], r["status"], r["ack"])
            for r in map(json.loads, tail.stdout.splitlines())] == [
        ("REF-I12-V251", "accepted", "AA")]
    untrusted = _send(engine, "--ca", str(pki.other_ca))
    assert (untrusted.returncode, untrusted.stdout) == (2, "")
    assert untrusted.stderr == (f"--to 127.0.0.1:{engine.port}: TLS handshake failed "
                                "(certificate verify failed: unable to get local issuer "
                                "certificate)\n")
    events = _stopped(engine)
    assert [e["control_id"] for e in events if e["event"] == "message.stored"] == ["REF-I12-V251"]
    assert [e for e in events if e["event"] == "message.retransmission"] == []
    assert [(c, e) for c, _p, e in _tls_failures(events)] == [
        ("referrals", "tlsv1 alert unknown ca")]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_plain_tcp_client_is_refused_and_the_next_tls_client_served(
        start: Any, pki: Pki, sqlite_url: str, workers: int) -> None:
    """A plain-TCP MLLP client gets no ACK and its connection is closed; `mllp.tls_failed` is
    logged once with the channel, its TCP peer and OpenSSL's reason.  The next clients, over
    TLS, are answered AA (in both processes with `workers: 2`), and the stored peer is the TCP
    peer."""
    engine = start(workers, _tls(pki))
    with MLLPClient("127.0.0.1", engine.port, timeout=10) as plain:
        plain_peer = _local(plain)
        assert plain.exchange(sample_payload("ref_i12_v251.hl7")) == []
        assert plain.closed
    peers = []
    for _ in range(2):  # round robin: the second lands in the other process with workers: 2
        with MLLPClient("127.0.0.1", engine.port, timeout=10, ssl_context=_context(pki)) as c:
            peers.append(_local(c))
            (ack,) = c.exchange(sample_payload("ref_i12_v251.hl7"))
            assert (parse(ack)["MSA.1"], parse(ack)["MSA.2"]) == ("AA", "REF-I12-V251")
    events = _stopped(engine)
    assert _tls_failures(events) == [("referrals", plain_peer, "wrong version number")]
    assert _stored(sqlite_url) == [("REF-I12-V251", peers[0])]
    assert [e["peer"] for e in events if e["event"] == "message.retransmission"] == [peers[1]]


@pytest.mark.parametrize("workers", [1, 2])
def test_mutual_tls_takes_only_a_certificate_its_client_ca_signed(
        start: Any, pki: Pki, sqlite_url: str, workers: int) -> None:
    """With `client_ca`: no client certificate, and one from another CA, are refused (exit 2,
    the server's alert named, nothing stored, `mllp.tls_failed` for each); the client
    certificate the CA signed gets AA."""
    engine = start(workers, _tls(pki, mutual=True))
    to = f"--to 127.0.0.1:{engine.port}"
    anonymous = _send(engine, "--ca", str(pki.ca))
    assert (anonymous.returncode, anonymous.stdout, anonymous.stderr) == (
        2, "", f"{to}: TLS handshake failed (tlsv13 alert certificate required)\n")
    stranger = _send(engine, "--ca", str(pki.ca), "--cert", str(pki.stranger_cert),
                     "--key", str(pki.stranger_key))
    assert (stranger.returncode, stranger.stdout, stranger.stderr) == (
        2, "", f"{to}: TLS handshake failed (tlsv1 alert unknown ca)\n")
    assert _stored(sqlite_url) == []
    known = _send(engine, "--ca", str(pki.ca), "--cert", str(pki.client_cert),
                  "--key", str(pki.client_key))
    assert (known.returncode, known.stdout, known.stderr) == (
        0, f"{SAMPLE}: AA REF-I12-V251\n", "")
    events = _stopped(engine)
    assert sorted((c, e) for c, _p, e in _tls_failures(events)) == [
        ("referrals", "certificate verify failed"),
        ("referrals", "peer did not return a certificate")]
    assert all(p.startswith("127.0.0.1:") for _c, p, _e in _tls_failures(events))
    assert [c for c, _p in _stored(sqlite_url)] == ["REF-I12-V251"]


@pytest.mark.parametrize("workers", [1, 2])
def test_an_idle_tls_connection_is_closed_even_if_the_peer_stays_silent(
        start: Any, pki: Pki, workers: int) -> None:
    """The idle timeout closes a TLS connection whose peer neither reads nor closes: the engine
    does not wait for the peer's close_notify."""
    engine = start(workers, _tls(pki), limits={"idle_timeout_s": 0.5})
    with MLLPClient("127.0.0.1", engine.port, timeout=10, ssl_context=_context(pki)) as silent:
        assert engine.wait_for("mllp.idle_timeout")
        closed = engine.wait_for("mllp.connection_closed")  # while the client still holds it
        assert [e["peer"] for e in closed] == [_local(silent)]
        assert silent.receive(1) == [] and silent.closed


# --- send's TLS options: usage and file errors --------------------------------------------------


@pytest.mark.parametrize("options, said", [
    (["--cert", "{client_cert}"], "--cert needs --key"),
    (["--key", "{client_key}"], "--key needs --cert"),
    (["--ca", "{missing}"], "--ca {missing}: cannot read (No such file or directory)"),
    (["--ca", "{sample}"], "--ca {sample}: not a PEM file"),
    (["--ca", "{client_key}"], "--ca {client_key}: not a valid CA certificate"),
    (["--cert", "{client_key}", "--key", "{client_key}"],
     "--cert {client_key}: not a valid certificate"),
    (["--cert", "{client_cert}", "--key", "{client_cert}"],
     "--key {client_cert}: not a valid private key"),
    (["--cert", "{client_cert}", "--key", "{stranger_key}"],
     "--key {stranger_key}: does not match the certificate in --cert"),
])
def test_send_tls_option_errors_are_one_line_and_exit_2(
        tmp_path: Path, pki: Pki, options: list[str], said: str) -> None:
    """A TLS option that cannot be used is named with its file on one stderr line, exit 2,
    before anything is sent (no server is needed)."""
    names = {"missing": str(tmp_path / "nope.pem"), "sample": SAMPLE,
             **{k: str(v) for k, v in vars(pki).items()}}
    out = subprocess.run(
        [sys.executable, "-m", "engine", "send", SAMPLE, "--to", "127.0.0.1:1",
         *(o.format(**names) for o in options), "--config", str(tmp_path / "none.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (2, "", said.format(**names) + "\n")


def test_send_tls_to_a_plain_tcp_port_says_its_handshake_got_no_answer(tmp_path: Path) -> None:
    """`send --tls` to a port that does not speak TLS (it waits for an MLLP frame) fails its
    handshake once --timeout passes: exit 2, one line."""
    with socket.create_server(("127.0.0.1", 0)) as plain:
        port = plain.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "engine", "send", SAMPLE, "--to", f"127.0.0.1:{port}",
             "--tls", "--timeout", "0.5", "--config", str(tmp_path / "none.yaml")],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (
        2, "", f"--to 127.0.0.1:{port}: TLS handshake failed (no answer within 0.5 s)\n")
