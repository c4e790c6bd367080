"""The MLLP listener protocol (docs/hl7-rules.md, "Framing"): ordering, framing, limits, close.

Everything runs on a `StringTransport` and a `task.Clock`; the handler is a fake whose Deferreds
the tests fire by hand, so the order in which frames are handed over and ACKs are written is
observable step by step.  `send`, which writes an ACK straight to a TCP socket, runs on a socket
pair.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections import deque
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs
from twisted.internet import defer, task, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure

from engine.mllp.options import ListenerOptions
from engine.mllp.server import MLLPServerFactory, MLLPServerProtocol, Reply, frame, send

PEER = "10.1.2.3:40000"
CLOSED = Failure(ConnectionDone("peer closed"))
Logs = list[MutableMapping[str, Any]]


def msg(n: int) -> bytes:
    """A small REF^I12 payload with control id MSG000n."""
    return (b"MSH|^~\\&|PCPEHR|NORTH|REFTRACK|HUB|20260101120000||REF^I12^REF_I12|MSG%04d|P|2.5.1\r"
            b"RF1|P^Pending|R^Routine|Med|||REF-%d\r" % (n, n))


def ack(n: int, code: bytes = b"AA") -> bytes:
    """The ACK for `msg(n)` with MSA-1 = `code`."""
    return (b"MSH|^~\\&|REFTRACK|HUB|PCPEHR|NORTH|20260101120001||ACK^I12^ACK|ACK%04d|P|2.5.1\r"
            b"MSA|%s|MSG%04d\r" % (n, code, n))


@dataclass
class Call:
    """One hand-over to the handler: what it got, and what was on the wire at that moment."""

    payload: bytes
    peer: str
    written: bytes
    deferred: defer.Deferred[list[bytes]]


@dataclass
class FakeHandler:
    """Records each call and gives it a Deferred the test fires, which replies (a Failure
    too); `prepared` ones are used first."""

    transports: list[StringTransport] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    prepared: deque[defer.Deferred[list[bytes]]] = field(default_factory=deque)

    def __call__(self, payload: bytes, peer: str, reply: Reply) -> None:
        d: defer.Deferred[list[bytes]] = (self.prepared.popleft() if self.prepared
                                          else defer.Deferred())
        written = self.transports[-1].value() if self.transports else b""
        self.calls.append(Call(payload, peer, written, d))
        d.addBoth(reply)

    @property
    def payloads(self) -> list[bytes]:
        return [c.payload for c in self.calls]


def channel(tolerate_missing_cr: bool = True, allow: tuple[str, ...] = (),
            **limits: Any) -> ListenerOptions:
    """A test channel's listener; `limits` override small, test-friendly defaults."""
    values: dict[str, Any] = dict(max_frame_bytes=1024, idle_timeout_s=30.0, max_connections=2,
                                  max_queued_frames=4, frame_timeout_s=30.0,
                                  max_connections_per_address=0)
    values.update(limits)
    return ListenerOptions(name="test", tolerate_missing_cr=tolerate_missing_cr,
                           allow=tuple(ipaddress.ip_network(a) for a in allow), **values)


def connect(factory: MLLPServerFactory, handler: FakeHandler | None = None,
            port: int = 40000) -> tuple[MLLPServerProtocol, StringTransport]:
    """Build a protocol from `factory` and connect it to a fresh StringTransport."""
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.1.2.3", port))
    if handler is not None:
        handler.transports.append(transport)
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(transport)
    return protocol, transport


def answer_at_once(payload: bytes, peer: str, reply: Reply) -> None:
    """A handler that replies before it returns: one AA echoing MSH-10."""
    control = payload.split(b"|")[9]
    reply([b"MSA|AA|" + control + b"\r"])


def at_once_ack(n: int) -> bytes:
    return frame(b"MSA|AA|MSG%04d\r" % n)


@pytest.fixture(name="logs")
def logs_fixture() -> Iterator[Logs]:
    """Every structlog event emitted during the test (factories are built inside the capture)."""
    with capture_logs() as entries:
        yield entries


@pytest.fixture(name="clock")
def clock_fixture() -> task.Clock:
    return task.Clock()


@pytest.fixture(name="handler")
def handler_fixture() -> FakeHandler:
    return FakeHandler()


@pytest.fixture(name="factory")
def factory_fixture(logs: Logs, handler: FakeHandler,
                    clock: task.Clock) -> MLLPServerFactory:
    """The default test channel, with the fake handler and the test clock."""
    return MLLPServerFactory(channel(), handler, clock)


@pytest.fixture(name="conn")
def conn_fixture(factory: MLLPServerFactory,
                 handler: FakeHandler) -> tuple[MLLPServerProtocol, StringTransport]:
    return connect(factory, handler)


def events(logs: Logs, name: str) -> Logs:
    return [e for e in logs if e["event"] == name]


# --- framing and ordering -------------------------------------------------------------------


def test_frame_wraps_payload_in_mllp_envelope() -> None:
    """`frame()` is 0x0B + payload + 0x1C 0x0D, byte for byte."""
    assert frame(b"MSH|^~\\&|A\r") == b"\x0bMSH|^~\\&|A\r\x1c\x0d"
    assert frame(b"") == b"\x0b\x1c\x0d"


def test_one_frame_handed_over_and_its_ack_written(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler) -> None:
    """A frame is handed to the handler with the peer; its ACK is written framed, nothing else."""
    protocol, transport = conn
    protocol.dataReceived(frame(msg(1)))
    assert [(c.payload, c.peer) for c in handler.calls] == [(msg(1), PEER)]
    assert transport.value() == b""
    handler.calls[0].deferred.callback([ack(1)])
    assert transport.value() == frame(ack(1))


@pytest.mark.parametrize(("stored", "commit"), [(True, b"\x06"), (False, b"\x15")])
def test_release_2_commit_frame_goes_out_when_stored_then_the_hl7_ack(
        clock: task.Clock, stored: bool, commit: bytes) -> None:
    """`framing.mllp_release: 2` (docs/hl7-rules.md): the handler gets a fourth argument; calling it
    writes the commit ACK (0x06) or NAK (0x15) frame at once, and the HL7 ACK follows when the
    handler's answer comes; the next frame waits for both."""
    calls: list[tuple[bytes, Any, defer.Deferred[list[bytes]]]] = []

    def handler(payload: bytes, _peer: str, reply: Reply, committed: Any) -> None:
        d: defer.Deferred[list[bytes]] = defer.Deferred()
        calls.append((payload, committed, d))
        d.addCallback(reply)

    r2 = dataclasses.replace(channel(), mllp_release=2)
    protocol, transport = connect(MLLPServerFactory(r2, handler, clock))
    protocol.dataReceived(frame(msg(1)) + frame(msg(2)))
    assert [c[0] for c in calls] == [msg(1)]
    calls[0][1](stored)
    assert transport.value() == frame(commit)
    calls[0][2].callback([ack(1)])
    assert transport.value() == frame(commit) + frame(ack(1))
    assert [c[0] for c in calls] == [msg(1), msg(2)]


def test_release_1_handler_gets_no_commit_callback(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler) -> None:
    """The default channel (release 1) calls the handler with (payload, peer) only: the fake
    handler takes two arguments, and nothing but the HL7 ACK is written."""
    protocol, transport = conn
    protocol.dataReceived(frame(msg(1)))
    handler.calls[0].deferred.callback([ack(1)])
    assert transport.value() == frame(ack(1))


def test_frames_in_one_read_handed_over_one_at_a_time(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler) -> None:
    """Three frames in one read: the next is handed over only once the previous ACK is written."""
    protocol, transport = conn
    protocol.dataReceived(frame(msg(1)) + frame(msg(2)) + frame(msg(3)))
    assert handler.payloads == [msg(1)]
    handler.calls[0].deferred.callback([ack(1)])
    assert handler.payloads == [msg(1), msg(2)]
    assert handler.calls[1].written == frame(ack(1))
    handler.calls[1].deferred.callback([ack(2)])
    assert handler.payloads == [msg(1), msg(2), msg(3)]
    assert handler.calls[2].written == frame(ack(1)) + frame(ack(2))
    handler.calls[2].deferred.callback([ack(3)])
    assert transport.value() == frame(ack(1)) + frame(ack(2)) + frame(ack(3))


def test_acks_in_arrival_order_when_answers_complete_out_of_order(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler) -> None:
    """Answers ready in order 3, 2, 1 still go out as ACK 1, 2, 3, each before the next hand-over."""
    protocol, transport = conn
    first, second, third = (defer.Deferred[list[bytes]]() for _ in range(3))
    handler.prepared.extend([first, second, third])
    third.callback([ack(3)])
    second.callback([ack(2)])
    protocol.dataReceived(frame(msg(1)) + frame(msg(2)) + frame(msg(3)))
    assert handler.payloads == [msg(1)]
    assert transport.value() == b""
    first.callback([ack(1)])
    assert handler.payloads == [msg(1), msg(2), msg(3)]
    assert [c.written for c in handler.calls] == [b"", frame(ack(1)),
                                                  frame(ack(1)) + frame(ack(2))]
    assert transport.value() == frame(ack(1)) + frame(ack(2)) + frame(ack(3))


def test_frames_arriving_while_busy_wait_their_turn(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler) -> None:
    """Frames arriving in later reads while one is in work are queued, not handed over early."""
    protocol, transport = conn
    protocol.dataReceived(frame(msg(1)))
    protocol.dataReceived(frame(msg(2)))
    protocol.dataReceived(frame(msg(3)))
    assert handler.payloads == [msg(1)]
    for n, call in enumerate(handler.calls, start=1):  # grows as each ACK is written
        call.deferred.callback([ack(n)])
    assert handler.payloads == [msg(1), msg(2), msg(3)]
    assert transport.value() == frame(ack(1)) + frame(ack(2)) + frame(ack(3))


def test_frame_split_byte_by_byte(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler) -> None:
    """A frame fed one byte per read is handed over when, and only when, its 0x1C arrives (the
    channel tolerates a missing CR); the CR after it is swallowed, not junk."""
    protocol, transport = conn
    stream = frame(msg(1))
    for i in range(len(stream) - 2):
        protocol.dataReceived(stream[i : i + 1])
    assert handler.calls == []
    protocol.dataReceived(stream[-2:-1])
    assert handler.payloads == [msg(1)]
    protocol.dataReceived(stream[-1:])
    handler.calls[0].deferred.callback([ack(1)])
    assert transport.value() == frame(ack(1))
    assert protocol.decoder.junk_bytes == 0


def test_every_chunk_size_gives_every_frame_and_ack(logs: Logs,
                                                    clock: task.Clock) -> None:
    """Three frames replayed at every read size 1..N give the same three ACKs, byte-exact."""
    stream = frame(msg(1)) + frame(msg(2)) + frame(msg(3))
    expected = at_once_ack(1) + at_once_ack(2) + at_once_ack(3)
    for size in range(1, len(stream) + 1):
        protocol, transport = connect(MLLPServerFactory(channel(), answer_at_once, clock))
        for i in range(0, len(stream), size):
            protocol.dataReceived(stream[i : i + size])
        assert transport.value() == expected, size
    assert events(logs, "mllp.junk_discarded") == []


def test_many_frames_in_one_read_with_handler_answering_at_once(
        logs: Logs, clock: task.Clock) -> None:
    """A handler whose Deferreds have already fired is fed 2000 frames of one read, all ACKed.

    Regression: each synchronous answer used to recurse into the next hand-over, so a few hundred
    frames raised RecursionError inside a callback and the connection hung with no ACK.
    """
    count = 2000
    factory = MLLPServerFactory(channel(max_queued_frames=count), answer_at_once, clock)
    protocol, transport = connect(factory)
    protocol.dataReceived(b"".join(frame(msg(n)) for n in range(count)))
    assert transport.value() == b"".join(at_once_ack(n) for n in range(count))
    assert events(logs, "mllp.handler_failed") == []


def test_zero_acks_writes_nothing_and_serves_next(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler) -> None:
    """A handler answering with no ACK (MSH-15/16 = NE/NE) writes nothing; the next frame goes on."""
    protocol, transport = conn
    protocol.dataReceived(frame(msg(1)) + frame(msg(2)))
    handler.calls[0].deferred.callback([])
    assert transport.value() == b""
    assert handler.payloads == [msg(1), msg(2)]
    handler.calls[1].deferred.callback([ack(2)])
    assert transport.value() == frame(ack(2))


def test_two_acks_written_as_two_frames_in_order(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler) -> None:
    """Enhanced mode: an accept ACK (CA) then an application ACK (AA) are two frames, in order."""
    protocol, transport = conn
    protocol.dataReceived(frame(msg(1)))
    handler.calls[0].deferred.callback([ack(1, b"CA"), ack(1, b"AA")])
    assert transport.value() == frame(ack(1, b"CA")) + frame(ack(1, b"AA"))


# --- back-pressure and abuse ----------------------------------------------------------------


def test_queue_at_limit_keeps_reading(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler) -> None:
    """Exactly `max_queued_frames` (4) waiting behind the one in work does not pause reading."""
    protocol, transport = conn
    protocol.dataReceived(b"".join(frame(msg(n)) for n in range(1, 6)))
    assert handler.payloads == [msg(1)]
    assert transport.producerState == "producing"


def test_back_pressure_pauses_then_resumes_after_draining(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler) -> None:
    """More than 4 waiting pauses the transport; it resumes once at most 4 // 2 are waiting."""
    protocol, transport = conn
    protocol.dataReceived(b"".join(frame(msg(n)) for n in range(1, 7)))
    assert handler.payloads == [msg(1)]  # 5 waiting
    assert transport.producerState == "paused"
    states = []
    for n in range(1, 7):
        handler.calls[n - 1].deferred.callback([ack(n)])
        states.append(transport.producerState)
    # Waiting before each ACK's resume check: 5, 4, 3, 2, 1, 0.
    assert states == ["paused", "paused", "paused", "producing", "producing", "producing"]
    assert handler.payloads == [msg(n) for n in range(1, 7)]
    assert transport.value() == b"".join(frame(ack(n)) for n in range(1, 7))


def test_oversized_frame_is_answered_then_closed(
        logs: Logs, clock: task.Clock, handler: FakeHandler) -> None:
    """A frame whose payload passes `max_frame_bytes` (1024) is answered with what the factory's
    `oversize` builds from the frame's start, after the frame in work; then the connection is
    closed, nothing more is read or handed over, and the log names the sizes and the sender."""
    seen: list[tuple[bytes, int, int]] = []

    def oversize(head: bytes, size: int, limit: int) -> tuple[list[bytes], dict[str, str]]:
        seen.append((head, size, limit))
        return [b"TOO-LARGE"], {"sender": "PCPEHR^NORTH", "control_id": "MSG0002"}

    factory = MLLPServerFactory(channel(), handler, clock, oversize=oversize)
    protocol, transport = connect(factory, handler)
    protocol.dataReceived(frame(msg(1)) + b"\x0b" + msg(2) + b"A" * 900)
    assert not transport.disconnecting
    protocol.dataReceived(b"A" * 200)
    protocol.dataReceived(frame(msg(3)))
    assert handler.payloads == [msg(1)]  # msg(2) too large; msg(3) after it is never read
    assert transport.value() == b""  # msg(1)'s ACK first
    handler.calls[0].deferred.callback([ack(1)])
    assert transport.value() == frame(ack(1)) + frame(b"TOO-LARGE")
    assert transport.disconnecting
    protocol.dataReceived(frame(msg(4)))
    assert handler.payloads == [msg(1)]
    size = len(msg(2)) + 1100
    assert seen[0][0].startswith(msg(2)) and seen[0][1:] == (size, 1024)
    assert events(logs, "mllp.frame_too_large") == [{
        "event": "mllp.frame_too_large", "log_level": "warning", "channel": "test",
        "peer": PEER, "size": size, "limit": 1024, "sender": "PCPEHR^NORTH",
        "control_id": "MSG0002",
    }]


def test_oversized_frame_close_is_forced_when_peer_never_reads(
        logs: Logs, clock: task.Clock, handler: FakeHandler) -> None:
    """After the oversized frame's answer, a close still waiting on the peer ends by force."""
    factory = MLLPServerFactory(channel(), handler, clock)
    protocol, transport = connect(factory, handler)
    protocol.dataReceived(b"\x0b" + b"A" * 1100)
    assert transport.disconnecting and not transport.disconnected
    clock.advance(10)
    assert transport.disconnected


def test_frame_at_size_limit_is_accepted(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler,
        logs: Logs) -> None:
    """A payload of exactly `max_frame_bytes` is a normal frame."""
    protocol, transport = conn
    protocol.dataReceived(frame(b"A" * 1024))
    assert handler.payloads == [b"A" * 1024]
    assert not transport.disconnecting
    assert events(logs, "mllp.frame_too_large") == []


def test_junk_before_start_block_logged_with_count(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler,
        logs: Logs) -> None:
    """NULs and an HTTP probe before 0x0B are discarded and logged with their byte count."""
    protocol, _ = conn
    junk = b"\x00\x00GET / HTTP/1.0\r\n\r\n"
    protocol.dataReceived(junk + frame(msg(1)))
    assert handler.payloads == [msg(1)]
    assert events(logs, "mllp.junk_discarded") == [{
        "event": "mllp.junk_discarded", "log_level": "warning", "channel": "test",
        "peer": PEER, "bytes": len(junk),
    }]


def test_junk_logged_once_per_read(
        conn: tuple[MLLPServerProtocol, StringTransport], logs: Logs) -> None:
    """Junk is logged per read that discarded some; a read with none logs nothing."""
    protocol, _ = conn
    protocol.dataReceived(b"XYZ")
    protocol.dataReceived(frame(msg(1)))
    protocol.dataReceived(b"\x00")
    assert [e["bytes"] for e in events(logs, "mllp.junk_discarded")] == [3, 1]


# --- idle timeout ---------------------------------------------------------------------------


def test_idle_timeout_closes_connection(
        conn: tuple[MLLPServerProtocol, StringTransport], clock: task.Clock,
        logs: Logs) -> None:
    """With no data for `idle_timeout_s` (30 s on the clock) the connection is closed, logged."""
    _, transport = conn
    clock.advance(29.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting
    assert events(logs, "mllp.idle_timeout") == [{
        "event": "mllp.idle_timeout", "log_level": "info", "channel": "test", "peer": PEER,
        "idle_timeout_s": 30.0,
    }]


def test_data_resets_idle_timeout(
        conn: tuple[MLLPServerProtocol, StringTransport], clock: task.Clock) -> None:
    """Any bytes, even part of a frame, restart the idle countdown."""
    protocol, transport = conn
    clock.advance(20)
    protocol.dataReceived(b"\x0bMSH|")
    clock.advance(20)
    assert not transport.disconnecting  # 40 s since connect, 20 s since data
    clock.advance(10)
    assert transport.disconnecting


def test_close_cancels_idle_timer(
        conn: tuple[MLLPServerProtocol, StringTransport], clock: task.Clock) -> None:
    """Once the connection is lost no idle timer is left on the clock."""
    protocol, _ = conn
    assert len(clock.getDelayedCalls()) == 1
    protocol.connectionLost(CLOSED)
    assert clock.getDelayedCalls() == []


def test_zero_idle_timeout_means_none(logs: Logs, clock: task.Clock,
                                      handler: FakeHandler) -> None:
    """`idle_timeout_s: 0` sets no timer: the connection stays open however long it idles."""
    _, transport = connect(MLLPServerFactory(channel(idle_timeout_s=0.0), handler, clock), handler)
    assert clock.getDelayedCalls() == []
    clock.advance(86400)
    assert not transport.disconnecting


# --- allow-list ---------------------------------------------------------------------------


def test_a_peer_outside_the_allow_list_is_refused_and_logged(
        handler: FakeHandler, clock: task.Clock, logs: Logs) -> None:
    """`listen.allow: [192.168.0.0/16, 10.1.2.3]`: 10.1.2.3 gets in, 10.9.9.9 is closed at once,
    logged, and never counted."""
    factory = MLLPServerFactory(channel(allow=("192.168.0.0/16", "10.1.2.3/32")), handler, clock)
    _, inside = connect(factory, handler)
    outsider = StringTransport(peerAddress=IPv4Address("TCP", "10.9.9.9", 40009))
    factory.buildProtocol(None).makeConnection(outsider)
    assert not inside.disconnecting and outsider.disconnecting
    assert factory.connections == 1
    assert events(logs, "mllp.connection_refused") == [{
        "event": "mllp.connection_refused", "log_level": "warning", "channel": "test",
        "peer": "10.9.9.9:40009", "reason": "not_allowed"}]


def test_allow_list_matching() -> None:
    """IPv4 seen as IPv6-mapped counts as IPv4; an empty list lets anyone in."""
    ch = channel(allow=("10.0.0.0/8", "fd00::/8"))
    assert ch.allows("10.200.1.1") and ch.allows("::ffff:10.1.1.1") and ch.allows("fd00::5")
    assert not ch.allows("11.0.0.1") and not ch.allows("::1") and not ch.allows("unix")
    assert channel().allows("203.0.113.7")


# --- connection limit -----------------------------------------------------------------------


def test_max_connections_refuses_extra_and_count_goes_down(
        factory: MLLPServerFactory, handler: FakeHandler, clock: task.Clock,
        logs: Logs) -> None:
    """A third connection over `max_connections` (2) is closed and logged; closes free a slot."""
    first, first_t = connect(factory, handler, port=40001)
    _, second_t = connect(factory, handler, port=40002)
    assert factory.connections == 2
    third, third_t = connect(factory, handler, port=40003)
    assert third_t.disconnecting
    assert not first_t.disconnecting and not second_t.disconnecting
    assert factory.connections == 2
    assert events(logs, "mllp.connection_refused") == [{
        "event": "mllp.connection_refused", "log_level": "warning", "channel": "test",
        "peer": "10.1.2.3:40003", "reason": "max_connections", "limit": 2,
    }]
    assert len(clock.getDelayedCalls()) == 2  # no idle timer for the refused one
    third.connectionLost(CLOSED)
    assert factory.connections == 2  # the refused connection was never counted
    first.connectionLost(CLOSED)
    assert factory.connections == 1
    _, fourth_t = connect(factory, handler, port=40004)
    assert not fourth_t.disconnecting
    assert factory.connections == 2
    assert [(e["event"], e["connections"]) for e in logs
            if e["event"] in ("mllp.connection_opened", "mllp.connection_closed")] == [
        ("mllp.connection_opened", 1), ("mllp.connection_opened", 2),
        ("mllp.connection_closed", 1), ("mllp.connection_opened", 2),
    ]


# --- peer close -----------------------------------------------------------------------------


def test_frames_complete_before_close_still_handed_over(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler,
        logs: Logs) -> None:
    """After the peer closes, queued frames and a final `0x1C`-without-CR frame are handled."""
    protocol, transport = conn
    protocol.dataReceived(frame(msg(1)) + frame(msg(2)) + b"\x0b" + msg(3) + b"\x1c")
    assert handler.payloads == [msg(1)]
    protocol.connectionLost(CLOSED)
    assert events(logs, "mllp.connection_closed") == [{
        "event": "mllp.connection_closed", "log_level": "info", "channel": "test",
        "peer": PEER, "connections": 0, "pending": 2,
    }]
    handler.calls[0].deferred.callback([ack(1)])
    assert handler.payloads == [msg(1), msg(2)]
    handler.calls[1].deferred.callback([ack(2)])
    assert handler.payloads == [msg(1), msg(2), msg(3)]
    handler.calls[2].deferred.callback([ack(3)])
    assert transport.value() == b""  # nowhere to write once closed
    assert events(logs, "mllp.junk_discarded") == []


def test_final_frame_without_cr_handed_over_when_idle(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler) -> None:
    """A final frame cut after its 0x1C is complete at once, before any close."""
    protocol, _ = conn
    protocol.dataReceived(b"\x0b" + msg(1) + b"\x1c")
    assert [(c.payload, c.peer) for c in handler.calls] == [(msg(1), PEER)]
    protocol.connectionLost(CLOSED)
    assert len(handler.calls) == 1


def test_final_frame_without_cr_dropped_in_strict_mode(
        logs: Logs, clock: task.Clock, handler: FakeHandler) -> None:
    """`tolerate_missing_cr: false`: a final frame without CR is not handed over; it is logged
    as an incomplete frame with its size (not as junk)."""
    factory = MLLPServerFactory(channel(tolerate_missing_cr=False), handler, clock)
    protocol, _ = connect(factory, handler)
    partial = b"\x0b" + msg(2) + b"\x1c"
    protocol.dataReceived(frame(msg(1)) + partial)
    protocol.connectionLost(CLOSED)
    handler.calls[0].deferred.callback([ack(1)])
    assert handler.payloads == [msg(1)]
    assert events(logs, "mllp.junk_discarded") == []
    assert events(logs, "mllp.incomplete_frame") == [{
        "event": "mllp.incomplete_frame", "log_level": "warning", "channel": "test",
        "peer": PEER, "size": len(partial),
    }]


# --- handler failure ------------------------------------------------------------------------


def test_handler_errback_does_not_hang_connection(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler,
        logs: Logs) -> None:
    """A failed handler Deferred is logged, writes nothing, and the next frame is served."""
    protocol, transport = conn
    protocol.dataReceived(frame(msg(1)) + frame(msg(2)))
    handler.calls[0].deferred.errback(RuntimeError("boom"))
    assert events(logs, "mllp.handler_failed") == [{
        "event": "mllp.handler_failed", "log_level": "error", "channel": "test",
        "peer": PEER, "error": "RuntimeError",
    }]
    assert transport.value() == b""
    assert handler.payloads == [msg(1), msg(2)]
    handler.calls[1].deferred.callback([ack(2)])
    assert transport.value() == frame(ack(2))
    assert not transport.disconnecting


# --- slow, silent and crowding peers --------------------------------------------------------


def test_frame_timeout_cuts_a_dribbling_sender(
        logs: Logs, clock: task.Clock, handler: FakeHandler) -> None:
    """A frame still open `frame_timeout_s` after its 0x0B closes the connection, however
    often bytes arrive (each byte resets only the idle timeout)."""
    factory = MLLPServerFactory(channel(frame_timeout_s=5.0), handler, clock)
    protocol, transport = connect(factory, handler)
    for byte in (b"\x0b" + msg(1))[:9]:
        protocol.dataReceived(bytes([byte]))
        clock.advance(0.5)
    assert not transport.disconnecting
    clock.advance(1.0)
    assert transport.disconnecting
    assert handler.calls == []
    assert [(e["event"], e["size"]) for e in events(logs, "mllp.frame_timeout")] == [
        ("mllp.frame_timeout", 9)]


def test_frame_timeout_counts_from_each_frame_start(
        logs: Logs, clock: task.Clock, handler: FakeHandler) -> None:
    """Frames that complete in time never trip the timer, even back to back for longer than
    the timeout; time between frames does not count."""
    factory = MLLPServerFactory(channel(frame_timeout_s=5.0, idle_timeout_s=0), handler, clock)
    protocol, transport = connect(factory, handler)
    for n in range(1, 5):
        stream = frame(msg(n))
        protocol.dataReceived(stream[:20])
        clock.advance(4.0)
        protocol.dataReceived(stream[20:] + stream[:0])
        handler.calls[n - 1].deferred.callback([ack(n)])
        clock.advance(30.0)
    assert not transport.disconnecting
    assert events(logs, "mllp.frame_timeout") == []


def test_frame_timeout_waits_while_we_hold_reading(
        logs: Logs, clock: task.Clock, handler: FakeHandler) -> None:
    """While the engine itself stopped reading (its queue is full), an open frame is not the
    sender's fault: the timer starts again instead of closing."""
    factory = MLLPServerFactory(channel(frame_timeout_s=5.0, max_queued_frames=1), handler,
                                clock)
    protocol, transport = connect(factory, handler)
    protocol.dataReceived(b"".join(frame(msg(n)) for n in range(1, 4)) + b"\x0bMSH")
    assert transport.producerState == "paused"
    clock.advance(6.0)
    assert not transport.disconnecting
    assert events(logs, "mllp.frame_timeout") == []


def test_unread_acks_stop_reading_until_they_drain(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler) -> None:
    """The protocol is its transport's push producer: when the transport says its write
    buffer is full (a peer that never reads its ACKs), reading stops; it resumes when the
    buffer drains, unless the frame queue still holds it."""
    protocol, transport = conn
    assert transport.producer is protocol and transport.streaming
    protocol.pauseProducing()  # what the transport does past its buffer size
    assert transport.producerState == "paused"
    protocol.resumeProducing()
    assert transport.producerState == "producing"
    protocol.dataReceived(b"".join(frame(msg(n)) for n in range(1, 7)))  # queue past 4
    protocol.pauseProducing()
    protocol.resumeProducing()
    assert transport.producerState == "paused"  # the queue still holds reading


def test_per_address_cap_refuses_the_extra_connection(
        logs: Logs, clock: task.Clock, handler: FakeHandler) -> None:
    """`max_connections_per_address`: one address may not take every slot; others still
    connect, and a closed connection frees its address's slot."""
    factory = MLLPServerFactory(channel(max_connections=10, max_connections_per_address=2),
                                handler, clock)
    first, _ = connect(factory, handler, port=40001)
    connect(factory, handler, port=40002)
    _, refused = connect(factory, handler, port=40003)
    assert refused.disconnecting
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.9.9.9", 40004))
    other = factory.buildProtocol(None)
    other.makeConnection(transport)
    assert not transport.disconnecting
    first.connectionLost(CLOSED)
    _, again = connect(factory, handler, port=40005)
    assert not again.disconnecting
    assert [e["reason"] for e in events(logs, "mllp.connection_refused")] == [
        "max_connections_per_address"]


def test_a_retired_connection_answers_its_frames_then_closes(
        conn: tuple[MLLPServerProtocol, StringTransport], handler: FakeHandler,
        factory: MLLPServerFactory) -> None:
    """A reload removed or replaced the channel: the connection reads nothing more, answers
    the frame in work and those already queued, then closes."""
    protocol, transport = conn
    protocol.dataReceived(frame(msg(1)) + frame(msg(2)))
    factory.retire()
    assert transport.producerState == "paused" and not transport.disconnecting
    protocol.dataReceived(frame(msg(3)))  # arrived before the pause took effect: not read
    handler.calls[0].deferred.callback([ack(1)])
    assert not transport.disconnecting
    handler.calls[1].deferred.callback([ack(2)])
    assert transport.value() == frame(ack(1)) + frame(ack(2))
    assert transport.disconnecting
    assert handler.payloads == [msg(1), msg(2)]


# --- writing the ACKs ------------------------------------------------------------------------


class _Port:
    _realPortNumber = 2575


def test_send_goes_straight_to_an_idle_tcp_socket_and_queues_behind_buffered_bytes() -> None:
    """An ACK on a TCP connection with nothing buffered is sent at once, with no reactor
    round trip; once anything is buffered, what follows is buffered behind it, in order."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    transport = tcp.Server(ours, Protocol(), ("127.0.0.1", 40000), _Port(), 1, MemoryReactor())
    with ours, peer:
        send(transport, frame(b"MSA|AA|1\r"))
        assert peer.recv(100) == frame(b"MSA|AA|1\r")
        assert not transport._tempDataBuffer
        transport.write(b"\x06")
        send(transport, frame(b"MSA|AA|2\r"))
        assert transport._tempDataBuffer == [b"\x06", frame(b"MSA|AA|2\r")]


def test_send_buffers_what_a_full_socket_does_not_take() -> None:
    """The bytes the kernel does not take at once wait in the transport's buffer (and count
    toward its back-pressure), after the part that was sent."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    transport = tcp.Server(ours, Protocol(), ("127.0.0.1", 40000), _Port(), 1, MemoryReactor())
    data = bytes(range(256)) * 4096
    with ours, peer:
        send(transport, data)
        left = b"".join(transport._tempDataBuffer)
        assert 0 < len(left) < len(data)
        assert data.endswith(left)
