"""MLLP frame decoding (docs/hl7-rules.md): splits, coalescing, junk, missing CR, size cap."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.mllp.framing import FrameDecoder, FrameTooLarge

SAMPLES = Path(__file__).parent.parent / "samples"

SYNTHETIC = [
    b"MSH|^~\\&|REFSYS|CLINIC|HUB|HOSP|20240101120000||REF^I12^REF_I12|MSG0001|P|2.5.1\r"
    b"RF1|P^Pending|R^Routine|Med|||REF-1\rPRD|RP|Doe^Jane\rPID|1||123^^^CLINIC^MR||Roe^Ann\r",
    b"MSH|^~\\&|OE|CLINIC|HUB|HOSP|20240101120500||ORM^O01|MSG0002|P|2.3\r"
    b"PID|1||456^^^CLINIC^MR||Poe^Bo\rORC|NW|ORD-9\rOBR|1|ORD-9||CONSULT-NEUR\r",
    b"MSH|^~\\&|SCHED|HOSP|HUB|HOSP|20240102090000||SIU^S12|MSG0003|P|2.5\r"
    b"SCH|APT-1|APT-1\rPID|1||123^^^CLINIC^MR||Roe^Ann\r",
]


def frame(payload: bytes) -> bytes:
    """Wrap one payload in the MLLP envelope."""
    return b"\x0b" + payload + b"\x1c\x0d"


def feed_in_chunks(decoder: FrameDecoder, stream: bytes, size: int) -> list[bytes]:
    """Feed `stream` in reads of `size` bytes and collect every payload returned."""
    out: list[bytes] = []
    for i in range(0, len(stream), size):
        out += decoder.feed(stream[i : i + size])
    return out


def sample_payloads() -> list[bytes]:
    """The synthetic messages plus every `samples/*.hl7` file, LF line ends turned into CR.

    A file holding 0x0B or 0x1C cannot travel inside one MLLP frame, so it is left out.
    """
    payloads = list(SYNTHETIC)
    for path in sorted(SAMPLES.glob("*.hl7")):
        data = path.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        if b"\x0b" not in data and b"\x1c" not in data:
            payloads.append(data)
    return payloads


@pytest.fixture(name="decoder")
def fixture_decoder() -> FrameDecoder:
    """A lenient decoder with the default 10 MiB cap."""
    return FrameDecoder()


@pytest.fixture(name="strict")
def fixture_strict() -> FrameDecoder:
    """A decoder that accepts only `0x1C 0x0D` as a trailer."""
    return FrameDecoder(tolerate_missing_cr=False)


def test_several_frames_in_one_feed(decoder: FrameDecoder) -> None:
    """One read holding three whole frames yields all three payloads, in order."""
    stream = b"".join(frame(p) for p in SYNTHETIC)
    assert decoder.feed(stream) == SYNTHETIC
    assert decoder.buffered == 0
    assert decoder.junk_bytes == 0


def test_empty_payload_frame(decoder: FrameDecoder) -> None:
    """`0B 1C 0D` is a frame with an empty payload, not junk."""
    assert decoder.feed(b"\x0b\x1c\x0d") == [b""]
    assert decoder.junk_bytes == 0


@pytest.mark.parametrize("tolerate", [True, False])
def test_every_split_point_of_two_frames(tolerate: bool) -> None:
    """Two frames split into two reads at every offset, including between 0x1C and 0x0D."""
    first, second = b"MSH|A\rPID|1\r", b"MSH|B\r"
    stream = frame(first) + frame(second)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder(tolerate_missing_cr=tolerate)
        got = decoder.feed(stream[:cut])
        assert decoder.buffered <= cut
        got += decoder.feed(stream[cut:])
        assert got == [first, second], cut
        assert decoder.junk_bytes == 0
        assert decoder.buffered == 0


def test_split_between_fs_and_cr_waits_for_next_byte_when_strict(strict: FrameDecoder) -> None:
    """Strict mode: a read ending in 0x1C completes nothing until the next byte arrives."""
    assert strict.feed(b"\x0bMSH|A\r\x1c") == []
    assert strict.buffered == 8
    assert strict.feed(b"\x0d") == [b"MSH|A\r"]
    assert strict.buffered == 0


def test_frame_complete_at_fs_when_tolerant(decoder: FrameDecoder) -> None:
    """Lenient mode: a read ending in 0x1C completes the frame at once (a sender that never
    sends the CR and waits for its ACK is answered); the CR arriving later is swallowed,
    not counted as junk."""
    assert decoder.feed(b"\x0bMSH|A\r\x1c") == [b"MSH|A\r"]
    assert decoder.buffered == 0
    assert decoder.feed(b"\x0d") == []
    assert decoder.feed(b"\x0bMSH|B\r\x1c") == [b"MSH|B\r"]
    assert decoder.junk_bytes == 0


@pytest.mark.parametrize("size", range(1, 17))
def test_replay_samples_at_chunk_sizes(size: int) -> None:
    """Every sample, framed and concatenated, fed in `size`-byte reads, comes back exactly."""
    payloads = sample_payloads()
    stream = b"".join(frame(p) for p in payloads)
    decoder = FrameDecoder()
    assert feed_in_chunks(decoder, stream, size) == payloads
    assert decoder.junk_bytes == 0
    assert decoder.buffered == 0
    assert decoder.eof() == []


def test_coalesced_reads_hold_several_frames_and_a_fragment(decoder: FrameDecoder) -> None:
    """Reads that each hold one or more whole frames plus part of the next lose nothing."""
    payloads = SYNTHETIC * 4
    stream = b"".join(frame(p) for p in payloads)
    size = len(frame(SYNTHETIC[0])) * 5 // 2
    reads = [decoder.feed(stream[i : i + size]) for i in range(0, len(stream), size)]
    assert [p for read in reads for p in read] == payloads
    assert max(len(read) for read in reads) >= 2


def test_junk_before_start_block_is_discarded_and_counted(decoder: FrameDecoder) -> None:
    """NULs and an HTTP probe before 0x0B are dropped and counted byte for byte."""
    probe = b"GET / HTTP/1.0\r\n\r\n"
    stream = b"\x00\x00\x00" + frame(b"MSH|A\r") + probe + frame(b"MSH|B\r") + b"\x00"
    assert decoder.feed(stream) == [b"MSH|A\r", b"MSH|B\r"]
    assert decoder.junk_bytes == 3 + len(probe) + 1
    assert decoder.buffered == 0


def test_junk_counted_across_reads(decoder: FrameDecoder) -> None:
    """Junk split over several reads is counted once per byte and never buffered."""
    assert decoder.feed(b"GET / ") == []
    assert decoder.buffered == 0
    assert decoder.feed(b"HTTP/1.0\r\n\r\n\x0bMSH|A") == []
    assert decoder.feed(b"\r\x1c\x0d") == [b"MSH|A\r"]
    assert decoder.junk_bytes == len(b"GET / HTTP/1.0\r\n\r\n")


def test_stray_lf_and_crlf_after_trailer_are_ignored(decoder: FrameDecoder) -> None:
    """LF, or CR LF, right after `1C 0D` is skipped silently, even across reads."""
    assert decoder.feed(frame(b"MSH|A\r") + b"\n") == [b"MSH|A\r"]
    assert decoder.feed(b"\r\n") == []
    assert decoder.feed(frame(b"MSH|B\r") + b"\r\n" + frame(b"MSH|C\r")) == [
        b"MSH|B\r",
        b"MSH|C\r",
    ]
    assert decoder.junk_bytes == 0
    assert decoder.eof() == []
    assert decoder.junk_bytes == 0


def test_cr_lf_after_other_junk_is_counted(decoder: FrameDecoder) -> None:
    """Only CR/LF directly after a trailer are free; once junk starts, CR/LF count too."""
    stream = frame(b"MSH|A\r") + b"\nX\r\n" + frame(b"MSH|B\r")
    assert decoder.feed(stream) == [b"MSH|A\r", b"MSH|B\r"]
    assert decoder.junk_bytes == 3


def test_cr_lf_before_first_frame_is_junk(decoder: FrameDecoder) -> None:
    """CR/LF at the start of a connection follow no trailer, so they are junk."""
    assert decoder.feed(b"\r\n" + frame(b"MSH|A\r")) == [b"MSH|A\r"]
    assert decoder.junk_bytes == 2


def test_missing_cr_then_next_frame_tolerated(decoder: FrameDecoder) -> None:
    """Lenient mode: `1C 0B` ends the frame and the 0x0B opens the next one."""
    stream = b"\x0bMSH|A\r\x1c" + frame(b"MSH|B\r")
    assert decoder.feed(stream) == [b"MSH|A\r", b"MSH|B\r"]
    assert decoder.junk_bytes == 0


def test_missing_cr_then_next_frame_split_tolerated(decoder: FrameDecoder) -> None:
    """Lenient mode: a read ending in 0x1C, the next starting with 0x0B, gives both frames."""
    assert decoder.feed(b"\x0bMSH|A\r\x1c") == [b"MSH|A\r"]
    assert decoder.feed(frame(b"MSH|B\r")) == [b"MSH|B\r"]
    assert decoder.junk_bytes == 0


def test_missing_cr_then_eof_tolerated(decoder: FrameDecoder) -> None:
    """Lenient mode: 0x1C followed by connection close: the frame was complete at 0x1C."""
    assert decoder.feed(b"\x0bMSH|A\r\x1c") == [b"MSH|A\r"]
    assert decoder.eof() == []
    assert decoder.junk_bytes == 0
    assert decoder.buffered == 0


def test_missing_cr_then_lf_tolerated(decoder: FrameDecoder) -> None:
    """Lenient mode: `1C 0A` ends the frame; the LF is stray and not counted, other bytes are."""
    stream = b"\x0bMSH|A\r\x1c\n" + frame(b"MSH|B\r") + b"\x0bMSH|C\r\x1cZZ" + frame(b"MSH|D\r")
    assert decoder.feed(stream) == [b"MSH|A\r", b"MSH|B\r", b"MSH|C\r", b"MSH|D\r"]
    assert decoder.junk_bytes == 2


def test_missing_cr_not_tolerated_when_off(strict: FrameDecoder) -> None:
    """Strict mode: `1C 0B` does not end the frame; the 0x0B restarts it and the rest is junk."""
    stream = b"\x0bMSH|A\r\x1c" + frame(b"MSH|B\r")
    assert strict.feed(stream) == [b"MSH|B\r"]
    assert strict.junk_bytes == len(b"\x0bMSH|A\r\x1c")


def test_missing_cr_then_eof_not_tolerated_when_off(strict: FrameDecoder) -> None:
    """Strict mode: 0x1C then close yields nothing; the partial frame is an incomplete frame
    (its size reported), not junk."""
    assert strict.feed(b"\x0bMSH|A\r\x1c") == []
    assert strict.eof() == []
    assert (strict.incomplete_bytes, strict.junk_bytes) == (8, 0)
    assert strict.buffered == 0


def test_lone_fs_is_payload_when_strict(strict: FrameDecoder) -> None:
    """Strict mode: 0x1C followed by anything but CR is payload data, even across reads."""
    assert strict.feed(b"\x0bA\x1cB\x1c") == []
    assert strict.feed(b"\nC\x1c\x0d") == [b"A\x1cB\x1c\nC"]
    assert strict.junk_bytes == 0


def test_start_block_inside_open_frame_restarts(decoder: FrameDecoder) -> None:
    """A 0x0B inside an open frame drops the partial frame as junk and starts a new one."""
    stream = b"\x0bMSH|PARTIAL" + frame(b"MSH|A\r")
    assert decoder.feed(stream) == [b"MSH|A\r"]
    assert decoder.junk_bytes == len(b"\x0bMSH|PARTIAL")


def test_start_block_inside_open_frame_restarts_across_reads(decoder: FrameDecoder) -> None:
    """The restart is found when the new 0x0B arrives in a later read than the partial frame."""
    assert decoder.feed(b"\x0bMSH|PAR") == []
    assert decoder.feed(b"TIAL\x0bMSH|A") == []
    assert decoder.junk_bytes == len(b"\x0bMSH|PARTIAL")
    assert decoder.buffered == len(b"\x0bMSH|A")
    assert decoder.feed(b"\r\x1c\x0d") == [b"MSH|A\r"]


def test_eof_with_partial_frame_reports_incomplete(decoder: FrameDecoder) -> None:
    """Close in the middle of a frame (no 0x1C) yields nothing and reports the bytes held as
    an incomplete frame, not as junk."""
    assert decoder.feed(b"\x0bMSH|A") == []
    assert decoder.eof() == []
    assert (decoder.incomplete_bytes, decoder.junk_bytes) == (6, 0)
    assert decoder.buffered == 0


@pytest.mark.parametrize("tolerate", [True, False])
def test_frame_at_limit_is_accepted(tolerate: bool) -> None:
    """A payload of exactly max_frame_bytes decodes, whole or byte by byte."""
    payload = b"x" * 64
    whole = FrameDecoder(max_frame_bytes=64, tolerate_missing_cr=tolerate)
    assert whole.feed(frame(payload)) == [payload]
    split = FrameDecoder(max_frame_bytes=64, tolerate_missing_cr=tolerate)
    assert feed_in_chunks(split, frame(payload), 1) == [payload]


def test_frame_over_limit_in_one_read_raises() -> None:
    """A complete frame one byte over max_frame_bytes raises FrameTooLarge with its size."""
    decoder = FrameDecoder(max_frame_bytes=64)
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(frame(b"x" * 65))
    assert (caught.value.size, caught.value.limit) == (65, 64)
    assert decoder.buffered == 0


@pytest.mark.parametrize("tolerate", [True, False])
def test_open_frame_over_limit_raises_before_trailer(tolerate: bool) -> None:
    """An open frame raises as soon as its buffered payload reaches max_frame_bytes + 1."""
    decoder = FrameDecoder(max_frame_bytes=64, tolerate_missing_cr=tolerate)
    assert decoder.feed(b"\x0b" + b"x" * 64) == []
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b"x")
    assert (caught.value.size, caught.value.limit) == (65, 64)
    assert decoder.buffered == 0


def test_strict_lone_fs_counts_toward_limit() -> None:
    """Strict mode: a 0x1C kept as payload counts toward the size cap."""
    decoder = FrameDecoder(max_frame_bytes=4, tolerate_missing_cr=False)
    assert decoder.feed(b"\x0bAB\x1cC\x1c") == []
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b"D")
    assert caught.value.size >= 5


def test_junk_does_not_count_toward_limit() -> None:
    """Bytes outside a frame are never held, so a long probe cannot trip the frame cap."""
    decoder = FrameDecoder(max_frame_bytes=8)
    assert decoder.feed(b"\x00" * 100 + frame(b"MSH|A\r")) == [b"MSH|A\r"]
    assert decoder.junk_bytes == 100


_payloads = st.lists(
    st.binary(max_size=64).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b"")),
    max_size=8,
)


@given(payloads=_payloads, tolerate=st.booleans(), data=st.data())
def test_property_any_cuts_decode_to_same_payloads(
    payloads: list[bytes], tolerate: bool, data: st.DataObject
) -> None:
    """Any payloads without 0x0B/0x1C, framed, concatenated and cut anywhere, decode unchanged."""
    stream = b"".join(frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = FrameDecoder(tolerate_missing_cr=tolerate)
    got: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += decoder.feed(stream[start:end])
    got += decoder.eof()
    assert got == payloads
    assert decoder.junk_bytes == 0
