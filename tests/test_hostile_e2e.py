"""Hostile senders against the real engine over loopback TCP (a subprocess, a real SQLite file).

Each test stands for one outage a fuzz campaign found: a poison frame that stopped every
channel, a sender dribbling one byte a second to hold a connection slot for ever, a client that
never reads its ACKs while the engine kept reading (memory without bound), an oversized frame
dropped without an answer, and a sender that never sends the CR after 0x1C.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from enginectl import Engine, numbered_referral, sample_payload, stored_messages, write_config

from engine.mllp.blocking import MLLPClient
from engine.parsing import parse

POISON = b"MSH|^~\\&|A|B|C|D|20260101||REF^I12|X1|P|\xb22.5.1\r"


@pytest.fixture(name="engine")
def engine_fixture(sqlite_url: str, tmp_path: Path) -> Iterator[Engine]:
    """The shipped channel on a free port, with small limits the tests can reach quickly."""
    config = write_config(tmp_path, sqlite_url, limits={
        "frame_timeout_s": 2, "max_frame_bytes": 65536, "max_connections": 4,
        "idle_timeout_s": 600})
    engine = Engine(config).start()
    yield engine
    engine.stop()


def _read_frame(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """One MLLP frame's payload from `sock`, or b"" if the peer closed first."""
    sock.settimeout(timeout)
    data = b""
    while b"\x1c" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data[data.index(b"\x0b") + 1: data.index(b"\x1c")]


def test_after_the_poison_frame_the_next_message_gets_aa(engine: Engine) -> None:
    """The 46-byte frame that once killed the writer thread is answered AR 203, and valid
    messages after it, on the same and on a new connection, are answered AA."""
    with MLLPClient("127.0.0.1", engine.port) as client:
        (answer,) = client.exchange(POISON)
        assert (parse(answer)["MSA.1"], parse(answer)["ERR.3"]) == ("AR", "203")
        _, ref = numbered_referral("POISON", 1)
        assert parse(client.exchange(ref)[0])["MSA.1"] == "AA"
    with MLLPClient("127.0.0.1", engine.port) as client:
        assert parse(client.exchange(sample_payload("siu_s12_v251.hl7"))[0])["MSA.1"] == "AA"


def test_a_sender_that_never_sends_the_cr_is_answered_at_once(engine: Engine) -> None:
    """With `tolerate_missing_cr` (the default) a frame ends at 0x1C: a sender that sends no
    CR after it and waits for each ACK gets every AA in turn on one connection, and no junk is
    logged (a late CR would be swallowed)."""
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
        for n in range(1, 4):
            control, ref = numbered_referral("NOCR", n)
            sock.sendall(b"\x0b" + ref + b"\x1c")
            answer = parse(_read_frame(sock, timeout=5))
            assert (answer["MSA.1"], answer["MSA.2"]) == ("AA", control)
    assert engine.wait_for("mllp.junk_discarded", timeout=1) == []


def test_an_oversized_frame_is_answered_ar_100_then_closed(engine: Engine) -> None:
    """Past `max_frame_bytes` the sender gets AR with ERR-3 100 and MSA-2 = its MSH-10, then
    the connection closes; the log names the sender and the control id, never the content."""
    control, ref = numbered_referral("BIG", 1)
    big = ref + b"NTE|1||" + b"X" * 70000 + b"\r"
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
        sock.sendall(b"\x0b" + big + b"\x1c\r")
        answer = parse(_read_frame(sock))
        assert (answer["MSA.1"], answer["MSA.2"], answer["ERR.3"]) == ("AR", control, "100")
        sock.settimeout(10)
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
        assert rest == b""  # closed, nothing more
    (event,) = engine.wait_for("mllp.frame_too_large")
    assert (event["control_id"], event["sender"], event["limit"]) == (
        control, "PCPEHR^NORTHCLINIC", 65536)
    assert stored_messages(f"sqlite:///{engine.config.parent / 'engine.db'}", "control_id") == []


def test_a_dribbling_sender_is_cut_off_and_real_clients_are_served(engine: Engine) -> None:
    """A sender writing one byte a second never completes its frame: `frame_timeout_s` (2 s
    here) after its 0x0B the engine closes the connection and logs `mllp.frame_timeout`; the
    slot is free again for real clients."""
    slow = socket.create_connection(("127.0.0.1", engine.port), timeout=10)
    try:
        closed = False
        for byte in (b"\x0b" + sample_payload("ref_i12_v251.hl7"))[:12]:
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            slow.settimeout(0.5)
            try:
                if slow.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed
    finally:
        slow.close()
    assert engine.wait_for("mllp.frame_timeout")
    with MLLPClient("127.0.0.1", engine.port) as client:
        assert parse(client.exchange(sample_payload("siu_s12_v251.hl7"))[0])["MSA.1"] == "AA"


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_client_that_never_reads_its_acks_is_no_longer_read(engine: Engine) -> None:
    """A client that sends and never reads: once its unread ACKs fill the buffers, the engine
    stops reading it (its sends stop going through) and its memory stays bounded; other
    clients are still answered meanwhile."""
    assert engine.proc is not None
    # Long MSH-3/4 come back in each ACK's MSH-5/6: ~6 KB ACKs fill the buffers in a few
    # hundred frames (the engine answers the resent frame from the store: cheap).
    big = b"MSH|^~\\&|" + b"A" * 3000 + b"|" + b"B" * 3000 + b"|REFTRACK|HUB|20260101||REF^I12|S1|P|2.5.1\r"
    one = b"\x0b" + big + b"\x1c\r"
    before = _rss_kb(engine.proc.pid)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    sock.connect(("127.0.0.1", engine.port))
    sock.setblocking(False)
    limit, sent, stalled_since, pending = 8000, 0, 0.0, b""
    deadline = time.monotonic() + 90
    try:
        while sent < limit and time.monotonic() < deadline:
            pending = pending or one
            try:
                pending = pending[sock.send(pending):]
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 3:
                    break  # nothing went through for 3 s: the engine stopped reading
                time.sleep(0.01)
                continue
            stalled_since = 0.0
            sent += not pending
        assert sent < limit, "the engine kept reading a client that never reads its ACKs"
        with MLLPClient("127.0.0.1", engine.port) as other:
            assert parse(other.exchange(sample_payload("siu_s12_v251.hl7"))[0])["MSA.1"] == "AA"
        growth_mb = (_rss_kb(engine.proc.pid) - before) / 1024
        assert growth_mb < 30, f"RSS grew {growth_mb:.1f} MB while a client never read"
    finally:
        sock.close()
