"""`hl7-engine send` on the engine's one MLLP client: the Twisted client of delivery
(`engine.mllp.client`) with delivery's TLS settings (`engine.tls.client_options`), end to end
against a real engine listener and a real socket, with throw-away certificates (tests/certs.py).
"""

from __future__ import annotations

import contextlib
import inspect
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from certs import Pki, make_pki
from cryptography.hazmat.primitives import serialization
from enginectl import SAMPLES, Engine, run_cli, write_config
from twisted.internet.testing import MemoryReactorClock

from engine.cli import send
from engine.mllp import session
from engine.mllp.client import ClientFactory, ClientProtocol, MLLPLink
from engine.mllp.session import MLLPSession
from engine.tls import (
    ClientCreator,
    ClientTLS,
    ListenTLS,
    TLSFileError,
    client_options,
    server_options,
)

SAMPLE = str(SAMPLES / "ref_i12_v251.hl7")  # MSH-10 REF-I12-V251


@pytest.fixture(name="pki", scope="module")
def pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_send_and_delivery_connect_through_the_same_client(pki: Pki) -> None:
    """`send`'s session and delivery's link both open their connection with `client_endpoint`,
    speak through `ClientProtocol`, and take their TLS from `client_options`; `send` carries
    no socket or ssl code of its own."""
    clock = MemoryReactorClock()
    tls = ClientTLS(ca=str(pki.ca), cert=str(pki.client_cert), key=str(pki.client_key))
    creator = client_options(tls, "127.0.0.1")
    sess = MLLPSession(clock, "127.0.0.1", 1, 1.0, creator)
    link = MLLPLink(clock, "127.0.0.1", 1, 1.0, tls=tls)
    assert isinstance(creator, ClientCreator)
    for sink in (sess, link):
        assert type(ClientFactory(sink).buildProtocol(None)) is ClientProtocol
    assert type(sess.endpoint) is type(link.endpoint)
    for source in (inspect.getsource(MLLPSession.__init__), inspect.getsource(MLLPLink.__init__)):
        assert "client_endpoint(" in source
    assert "client_options(" in inspect.getsource(send)
    for module in (send, session):
        text = inspect.getsource(module)
        assert "import ssl" not in text and "import socket" not in text
        assert "blocking" not in text


@pytest.fixture(name="mutual")
def mutual_fixture(tmp_path: Path, sqlite_url: str, pki: Pki) -> Iterator[Engine]:
    config = write_config(tmp_path, sqlite_url, top={"workers": 1}, listen={
        "host": "127.0.0.1", "port": 0,
        "tls": {"cert": str(pki.server_cert), "key": str(pki.server_key),
                "client_ca": str(pki.ca)}})
    engine = Engine(config).start()
    yield engine
    assert engine.stop() == 0


def test_send_with_a_client_certificate_and_a_server_name(mutual: Engine, pki: Pki) -> None:
    """With a client certificate the listener's CA signed, `send` is answered AA when the
    server's certificate carries --server-name; with a name it does not carry, the handshake
    fails (exit 2, one line naming the name) and nothing is sent."""
    client = ("--ca", str(pki.ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key))
    to = f"127.0.0.1:{mutual.port}"
    named = run_cli("send", SAMPLE, "--to", to, *client, "--server-name", "localhost",
                    config=mutual.config)
    assert (named.returncode, named.stdout, named.stderr) == (
        0, f"{SAMPLE}: AA REF-I12-V251\n", "")
    other = run_cli("send", SAMPLE, "--to", to, *client, "--server-name", "other.example.org",
                    config=mutual.config)
    assert (other.returncode, other.stdout, other.stderr) == (
        2, "", f"--to {to}: TLS handshake failed (certificate does not match "
               "other.example.org)\n")
    stored = [e["control_id"] for e in mutual.events() if e["event"] == "message.stored"]
    assert stored == ["REF-I12-V251"]


def _locked(pki: Pki, directory: Path) -> Path:
    """The client key, encrypted with a passphrase."""
    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), None)
    locked = directory / "locked.key"
    locked.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"synthetic-passphrase")))
    return locked


def test_an_encrypted_key_is_a_file_error_for_send_listeners_and_destinations(
        tmp_path: Path, pki: Pki) -> None:
    """The TLS settings refuse an encrypted key (no passphrase is ever asked for), for a
    destination as for a listener, naming the file and the problem."""
    locked = _locked(pki, tmp_path)
    for load in (lambda: client_options(ClientTLS(cert=str(pki.client_cert), key=str(locked)),
                                        "127.0.0.1"),
                 lambda: server_options(ListenTLS(str(pki.client_cert), str(locked)))):
        with pytest.raises(TLSFileError) as info:
            load()
        assert (info.value.path, info.value.problem) == (str(locked), "encrypted")
        assert str(info.value) == f"{locked}: encrypted (give an unencrypted key)"


def test_send_refuses_an_encrypted_key_and_never_prompts(tmp_path: Path, pki: Pki) -> None:
    """An encrypted --key is named on one line (exit 2) before anything is sent; no passphrase
    is asked for."""
    locked = _locked(pki, tmp_path)
    out = run_cli("send", SAMPLE, "--to", "127.0.0.1:1", "--cert", str(pki.client_cert),
                  "--key", str(locked), config=tmp_path / "none.yaml")
    assert (out.returncode, out.stdout, out.stderr) == (
        2, "", f"--key {locked}: encrypted (give an unencrypted key)\n")


def test_send_prints_only_acks_when_the_server_also_sends_bytes_outside_frames(
        tmp_path: Path) -> None:
    """Bytes outside any MLLP frame are dropped by the client without a word on stdout or
    stderr; the ACK frame after them is printed."""
    ack = (b"MSH|^~\\&|R|F|S|F|20261204120000||ACK|A1|P|2.5.1\rMSA|AE|REF-I12-V251\r")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def answer() -> None:
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(b"junk\r\n\x0b" + ack + b"\x1c\r")
                    conn.recv(65536)  # until the client closes

        threading.Thread(target=answer, daemon=True).start()
        out = run_cli("send", SAMPLE, "--to", f"127.0.0.1:{port}", config=tmp_path / "n.yaml")
    assert (out.returncode, out.stdout, out.stderr) == (1, f"{SAMPLE}: AE REF-I12-V251\n", "")


def test_send_to_a_host_name_that_does_not_resolve_says_so(tmp_path: Path) -> None:
    """A --to host with no address cannot be connected to: exit 2, one line, no traceback."""
    out = run_cli("send", SAMPLE, "--to", "no-such-host.invalid:2575", "--timeout", "5",
                  config=tmp_path / "none.yaml")
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.startswith("--to no-such-host.invalid:2575: cannot connect (")
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr

