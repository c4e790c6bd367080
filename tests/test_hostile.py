"""Hostile frames and the one-job boundary: a frame that trips a bug costs at most its own answer.

The 46-byte frame below once stopped ingest for good: `²` (0xB2 in cp1252) before MSH-12 passed
`str.isdigit`, `int` refused it, the fallback answer raised the same way and the writer thread
died.  These tests hold each layer of the fix: ASCII-only numbers, the fixed last-resort ACK,
header text that never echoes more than a short printable value, and a writer thread that
survives whatever one batch raises (and says so, loudly, if it dies anyway).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from enginectl import sample_payload
from structlog.testing import capture_logs

from engine.ack import AckBuilder, _version_tuple, fallback_ack
from engine.config import parse_config
from engine.errors import shown
from engine.parsing import parse
from engine.pipeline import Job, Pipeline
from engine.store.database import open_database
from engine.store.writer import GroupCommitWriter

POISON = b"MSH|^~\\&|A|B|C|D|20260101||REF^I12|X1|P|\xb22.5.1\r"
CHANNEL = parse_config({"channels": [{
    "name": "referrals", "listen": {"port": 0}, "accept": ["REF^I12-I15", "SIU^S12-S26"],
    "ack": {"application": "REFTRACK", "facility": "HUB"}}]}).channels[0]
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def _job(raw: bytes) -> Job:
    return Job(CHANNEL, raw, "127.0.0.1:1", NOW)


@pytest.mark.parametrize("version, expected", [
    ("2.5.1", (2, 5, 1)), ("2.3", (2, 3)), ("\u00b22.5.1", (2, 5)), ("2.\u0665", (2,)),
    ("2.\u00b2", (2,)), ("9" * 40, (2, 5)), ("", (2, 5))])
def test_version_reads_ascii_digits_only(version: str, expected: tuple[int, ...]) -> None:
    """Only ASCII digits make a version number: superscripts and other scripts' digits (which
    `str.isdigit` accepts) stop the reading, and nothing in MSH-12 can make it raise."""
    assert _version_tuple(version) == expected


def test_the_poison_frame_is_answered_ar_203_and_the_next_message_aa(sqlite_url: str) -> None:
    """The frame that stopped ingest is stored and answered AR 203 at MSH-12 (its version is
    not one we accept), and a valid message in the same batch and the next is AA."""
    pipeline = Pipeline(open_database(sqlite_url), {"referrals": AckBuilder("REFTRACK", "HUB")},
                        clock=lambda: NOW)
    ref = sample_payload("ref_i12_v251.hl7")
    first = pipeline.process_batch([_job(POISON), _job(ref)])
    answers = [parse(r.acks[0]) for r in first]
    assert [(a["MSA.1"], a["MSA.2"], a["ERR.3"]) for a in answers] == [
        ("AR", "X1", "203"), ("AA", "REF-I12-V251", "")]
    assert [r.committed for r in first] == [True, True]
    (then,) = pipeline.process_batch([_job(sample_payload("siu_s12_v251.hl7"))])
    assert parse(then.acks[0])["MSA.1"] == "AA"
    pipeline.close()


def test_rejected_header_values_are_quoted_short_and_printable(sqlite_url: str) -> None:
    """MSH-9, MSH-11 and MSH-12 of a damaged frame may hold anything, patient data included:
    the ACK names the field and quotes at most 20 printable ASCII characters of the value."""
    pipeline = Pipeline(open_database(sqlite_url), {"referrals": AckBuilder("REFTRACK", "HUB")},
                        clock=lambda: NOW)
    leak = "2.5.1 DOE JANE 19700101 SSN 123-45-6789"
    raw = POISON.replace(b"\xb22.5.1", leak.encode())
    (result,) = pipeline.process_batch([_job(raw)])
    text = parse(result.acks[0])["ERR.8"]
    assert text.startswith("MSH-12 version 2.5.1 DOE JANE 19... is not accepted")
    assert "123-45" not in text and "123-45" not in result.verdict.text
    pipeline.close()


@pytest.mark.parametrize("value, expected", [
    ("", "(empty)"), ("2.5.1", "2.5.1"), ("\u00b22.5", "?2.5"), ("x" * 25, "x" * 17 + "..."),
    ("a\rb\x00c", "a?b?c")])
def test_shown_values_are_printable_and_short(value: str, expected: str) -> None:
    """`shown`: printable ASCII only, at most 20 characters, `(empty)` for nothing."""
    assert shown(value) == expected


@pytest.mark.parametrize("raw, msa1, msa2", [
    (POISON, "AR", "X1"),
    (b"MSH|^~\\&|A|B|C|D|20260101||REF^I12|X1|P|2.5.1|||AL|NE\r", "CR", "X1"),
    (b"MSH|^~\\&|A|B|C|D|20260101||REF^I12|\xff\xfe|P|2.5.1\r", "AR", ""),
    (b"MSH|^~\\&|A|B|C|D|20260101||REF^I12|" + b"9" * 21 + b"|P|2.5.1\r", "AR", ""),
    (b"", "AR", ""), (b"MSH", "AR", ""), (b"\x00" * 100, "AR", "")])
def test_fallback_ack_is_fixed_and_readable(raw: bytes, msa1: str, msa2: str) -> None:
    """The last-resort answer: AR (CR when MSH-15/16 ask for enhanced mode) with ERR-3 207,
    MSA-2 only when MSH-10 is short plain ASCII, whatever the bytes."""
    ack = parse(fallback_ack(raw, control_id="F1"))
    assert (ack["MSA.1"], ack["MSA.2"], ack["ERR.3"], ack["MSH.10"]) == (msa1, msa2, "207", "F1")


def test_a_bug_building_one_ack_costs_only_that_ack(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """If building one message's ACK raises (a bug), that message gets the fixed AR 207, is
    logged as `ack.build_failed`, and the other messages of the batch get their own ACKs."""
    builder = AckBuilder("REFTRACK", "HUB")
    pipeline = Pipeline(open_database(sqlite_url), {"referrals": builder}, clock=lambda: NOW)
    real = AckBuilder.build

    def build(self: AckBuilder, msg: Any, verdict: Any) -> list[bytes]:
        if msg is not None and msg.header.control_id == "BOOM":
            raise ValueError("a bug")
        return real(self, msg, verdict)

    monkeypatch.setattr(AckBuilder, "build", build)
    ref = sample_payload("ref_i12_v251.hl7")
    with capture_logs() as logs:
        results = pipeline.process_batch([_job(ref.replace(b"REF-I12-V251", b"BOOM")),
                                          _job(sample_payload("siu_s12_v251.hl7"))])
    answers = [parse(r.acks[0]) for r in results]
    assert [(a["MSA.1"], a["MSA.2"], a["ERR.3"]) for a in answers] == [
        ("AR", "BOOM", "207"), ("AA", "SIU-S12-V251", "")]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["ack.build_failed"]
    pipeline.close()


class _Writer:
    """A GroupCommitWriter on its real thread, delivering results straight to a list."""

    def __init__(self, work: Callable[[list[int]], list[str]],
                 fail: Callable[[int, BaseException], str] = lambda j, e: f"failed {j}") -> None:
        self.results: list[str] = []
        self.died: list[BaseException] = []
        self.done = threading.Event()
        self.writer: GroupCommitWriter[int, str] = GroupCommitWriter(
            work, lambda fire: fire(), fail, on_died=self.died.append)

    def run(self, jobs: list[int]) -> list[str]:
        self.writer.start()
        for job in jobs:
            self.writer.submit(job, self._got)
        self.writer.stop(timeout=10)
        return self.results

    def _got(self, result: str) -> None:
        self.results.append(result)


def test_writer_answers_a_failed_batch_and_goes_on() -> None:
    """A batch whose work raises is answered through `fail`, job by job, and the thread goes on
    with the next batch."""
    def work(jobs: list[int]) -> list[str]:
        if 2 in jobs:
            raise RuntimeError("a bug")
        return [f"ok {j}" for j in jobs]

    w = _Writer(work)
    w.writer.start()
    w.writer.submit(1, w._got)
    w.writer.stop(timeout=10)
    w.writer.start()
    w.writer.submit(2, w._got)
    w.writer.submit(3, w._got)
    w.writer.stop(timeout=10)
    assert w.results[0] == "ok 1"
    assert w.results[1:] in (["failed 2", "ok 3"], ["failed 2", "failed 3"])
    assert w.died == []


def test_writer_survives_a_fail_that_raises_and_a_callback_that_raises() -> None:
    """Even when `fail` itself raises (its contract says it must not), the thread lives on and
    logs `writer.batch_lost`; a raising `done` callback does not starve the others."""
    calls: list[int] = []

    def work(jobs: list[int]) -> list[str]:
        calls.append(len(jobs))
        if 1 in jobs:
            raise RuntimeError("a bug")
        return [str(j) for j in jobs]

    def fail(job: int, exc: BaseException) -> str:
        raise RuntimeError("fail broke too")

    w = _Writer(work, fail)
    with capture_logs() as logs:
        w.writer.start()
        w.writer.submit(1, w._got)
        w.writer.stop(timeout=10)
        w.writer.start()
        w.writer.submit(2, lambda r: (_ for _ in ()).throw(ValueError("callback bug")))
        w.writer.submit(3, w._got)
        w.writer.stop(timeout=10)
    assert "3" in w.results and w.died == []
    events = {e["event"] for e in logs}
    assert {"writer.batch_lost", "writer.callback_failed"} <= events


class _Fatal(BaseException):
    """Stands for what no handler should catch (what would end the thread)."""


def test_a_dead_writer_says_so_and_calls_on_died() -> None:
    """If the thread ends by anything but `stop` (here a BaseException from the work), it logs
    `writer.died` at critical level and calls `on_died`: the service then exits non-zero."""
    def work(jobs: list[int]) -> list[str]:
        raise _Fatal()

    w = _Writer(work)
    with capture_logs() as logs:
        w.writer.start()
        w.writer.submit(1, w._got)
        w.writer._thread.join(10)  # type: ignore[union-attr]
    assert [type(e) for e in w.died] == [_Fatal]
    assert not w.writer.alive
    assert [(e["event"], e["log_level"]) for e in logs if e["event"] == "writer.died"] == [
        ("writer.died", "critical")]


def test_an_idle_writer_keeps_its_heartbeat() -> None:
    """An idle writer's heartbeat stays fresh (it wakes every second); a stopped one's ages."""
    w = _Writer(lambda jobs: [str(j) for j in jobs])
    w.writer.start()
    threading.Event().wait(1.5)
    assert w.writer.alive and w.writer.heartbeat_age() < 1.4
    w.writer.stop(timeout=10)
    assert not w.writer.alive


def test_accepted_connections_have_tcp_nodelay(reactor: Any) -> None:
    """Every accepted MLLP socket has TCP_NODELAY: an ACK is not held back by Nagle's
    algorithm until the peer's delayed ACK (~40 ms for the second of two pipelined frames;
    the latency itself is measured by `python -m bench.pipelined`)."""
    import socket

    from twisted.internet.threads import blockingCallFromThread

    from engine.mllp.server import MLLPServerFactory
    from engine.service import listener_options

    def handler(payload: bytes, peer: str, reply: Any) -> None:
        reply([])

    factory = MLLPServerFactory(listener_options(CHANNEL), handler, reactor)
    made: list[Any] = []
    build = factory.buildProtocol

    def keep(addr: Any) -> Any:
        made.append(build(addr))
        return made[-1]

    factory.buildProtocol = keep  # type: ignore[method-assign]
    port = blockingCallFromThread(reactor, reactor.listenTCP, 0, factory, interface="127.0.0.1")
    try:
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5):
            for _ in range(200):
                if made and made[0].open:
                    break
                threading.Event().wait(0.02)
            handle = made[0].transport.getHandle()
            assert handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        blockingCallFromThread(reactor, port.stopListening)


@pytest.mark.parametrize("field, value", [
    ("control_id", b"C" * 200), ("sender", b"S" * 228), ("control_id", b"C1\x00"),
    ("version", b"2.5.1" + b"9" * 40), ("type", b"REF" * 30 + b"^I12")])
def test_an_overlong_header_value_costs_only_its_frame(db_url: str, field: str,
                                                       value: bytes) -> None:
    """An MSH-3/4 or MSH-10 longer than the store keeps (or holding a NUL) is AR 104 at its
    field; other header values are stored cut to their columns.  On PostgreSQL, which refuses
    a value longer than its column, this once failed the whole batch (AE 207 for every frame):
    now the valid message beside it is AA."""
    head = {"control_id": b"MSH|^~\\&|A|B|C|D|20260101||REF^I12|%s|P|2.5.1\r",
            "sender": b"MSH|^~\\&|%s|B|C|D|20260101||REF^I12|X2|P|2.5.1\r",
            "version": b"MSH|^~\\&|A|B|C|D|20260101||REF^I12|X3|P|%s\r",
            "type": b"MSH|^~\\&|A|B|C|D|20260101||%s|X4|P|2.5.1\r"}[field] % value
    pipeline = Pipeline(open_database(db_url), {"referrals": AckBuilder("REFTRACK", "HUB")},
                        clock=lambda: NOW)
    results = pipeline.process_batch([_job(head), _job(sample_payload("siu_s12_v251.hl7"))])
    first, second = (parse(r.acks[0]) for r in results)
    assert first["MSA.1"] == "AR" and second["MSA.1"] == "AA"
    if field in ("control_id", "sender"):
        assert first["ERR.3"] == "104"
    assert all(r.committed for r in results)
    pipeline.close()
