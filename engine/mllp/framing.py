"""Incremental MLLP frame decoding: bytes in, complete HL7 payloads out (docs/hl7-rules.md).

This module owns the MLLP envelope only: finding `0x0B` ... `0x1C 0x0D` in a stream that arrives
in arbitrary pieces, discarding and counting junk between frames, and capping the frame size.  It
knows nothing about Twisted or HL7 content; the protocol feeds it whatever each read returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.errors import EngineError

START_BLOCK = 0x0B  # VT: opens a frame
END_BLOCK = 0x1C  # FS: closes a frame, followed by CR
# MLLP release 2 (docs/hl7-rules.md): the receiver's transport-level answer, a frame of one byte, sent
# once the frame is on safe storage (ACK) or could not be stored (NAK); never instead of the HL7
# ACK.
COMMIT_ACK, COMMIT_NAK = b"\x06", b"\x15"
CARRIAGE_RETURN = 0x0D
LINE_FEED = 0x0A
_STRAY_AFTER_TRAILER = (CARRIAGE_RETURN, LINE_FEED)


HEAD_BYTES = 4096  # of an oversized frame's start, kept to answer it (its MSH)


class FrameTooLarge(EngineError):
    """An open frame's payload grew past `max_frame_bytes`; the caller answers it from `head`
    (the payload's first HEAD_BYTES bytes, where its MSH is) and drops the connection."""

    def __init__(self, size: int, limit: int, head: bytes = b"") -> None:
        super().__init__(
            f"MLLP frame payload of at least {size} bytes exceeds the {limit}-byte limit"
        )
        self.size = size
        self.limit = limit
        self.head = head


@dataclass(slots=True)
class FrameDecoder:
    """Per-connection MLLP decoder: `feed()` each read, `eof()` once when the peer closes.

    `tolerate_missing_cr` makes `0x1C` alone the end of a frame (lenient mode): the frame is
    complete as soon as its `0x1C` arrives, so a sender that never sends the CR, and waits for its
    ACK, is answered at once; a CR (or LF) that follows later is swallowed.  Otherwise only
    `0x1C 0x0D` ends a frame and a lone `0x1C` is data.
    `junk_bytes` counts every byte discarded outside a frame, including partial frames abandoned by
    a new `0x0B`; CR/LF directly after a trailer are ignored without being counted.  A frame cut
    by EOF is not junk: `eof()` reports its size in `incomplete_bytes`.
    """

    max_frame_bytes: int = 10 * 1024 * 1024
    tolerate_missing_cr: bool = True
    junk_bytes: int = 0
    incomplete_bytes: int = 0  # set by eof(): the open frame the peer's close cut short
    # Unconsumed input; buf[_pos:] is what is held between calls (_pos is 0 after each call).
    _buf: bytearray = field(default_factory=bytearray, init=False, repr=False, compare=False)
    _pos: int = field(default=0, init=False, repr=False, compare=False)
    # True while buf[_pos] is the 0x0B of an open frame.
    _in_frame: bool = field(default=False, init=False, repr=False, compare=False)
    # Where the search for this frame's 0x1C resumes, so a frame arriving in many small reads is
    # scanned once, not once per read.
    _scan: int = field(default=0, init=False, repr=False, compare=False)
    # True right after a trailer, while only CR/LF have followed it.
    _after_trailer: bool = field(default=False, init=False, repr=False, compare=False)

    @property
    def in_frame(self) -> bool:
        """A frame's 0x0B has arrived and its trailer has not."""
        return self._in_frame

    @property
    def buffered(self) -> int:
        """Bytes currently held: the open frame (with its 0x0B), or a pending CR/LF run."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> list[bytes]:
        """Add one read's bytes; return the payloads of every frame they complete, in order.

        Raises `FrameTooLarge` when the open frame exceeds the limit; the decoder is then reset.
        """
        if not self._buf and (payload := self._whole(data)) is not None:
            return [payload]
        self._buf += data
        frames: list[bytes] = []
        while (self._in_frame or self._seek_start()) and (payload := self._seek_end()) is not None:
            frames.append(payload)
        self._compact()
        return frames

    def _whole(self, data: bytes) -> bytes | None:
        """The common read, nothing held before it: exactly one frame, 0x0B to 0x1C 0x0D, with
        neither byte inside and within the limit.  Its payload, cut without buffering, and the
        state the general path leaves (after a trailer); None for any other read."""
        trailer = len(data) - 2
        if (trailer < 1 or data[0] != START_BLOCK or data[-1] != CARRIAGE_RETURN
                or data.find(END_BLOCK, 1) != trailer or data.find(START_BLOCK, 1, trailer) >= 0
                or trailer - 1 > self.max_frame_bytes):
            return None
        self._after_trailer = True
        return data[1:trailer]

    def eof(self) -> list[bytes]:
        """The peer closed: an open frame is dropped (its size, 0x0B included, goes to
        `incomplete_bytes`), bytes outside a frame are junk.  Nothing is ever returned: a frame
        is complete before EOF or not at all; the list keeps the `feed` shape for callers."""
        end = len(self._buf)
        if self._in_frame:
            self.incomplete_bytes = end - self._pos
        elif not self._after_trailer:
            self.junk_bytes += end - self._pos
        self._reset()
        return []

    def _seek_start(self) -> bool:
        """Outside a frame: skip stray CR/LF after a trailer, count junk up to the next 0x0B."""
        buf, pos, end = self._buf, self._pos, len(self._buf)
        if self._after_trailer:
            while pos < end and buf[pos] in _STRAY_AFTER_TRAILER:
                pos += 1
            if pos == end:
                self._pos = pos
                return False
            self._after_trailer = False
        start = buf.find(START_BLOCK, pos)
        if start < 0:
            self.junk_bytes += end - pos
            self._pos = end
            return False
        self.junk_bytes += start - pos
        self._pos, self._scan, self._in_frame = start, start + 1, True
        return True

    def _seek_end(self) -> bytes | None:
        """Inside a frame: return its payload once the trailer is seen, else None (need more)."""
        buf, end = self._buf, len(self._buf)
        while True:
            trailer = buf.find(END_BLOCK, self._scan)
            restart = buf.find(START_BLOCK, self._scan, end if trailer < 0 else trailer)
            if restart >= 0:
                # Sender restarted mid-frame without a trailer: the partial frame is junk.
                self.junk_bytes += restart - self._pos
                self._pos, self._scan = restart, restart + 1
                continue
            if trailer < 0:
                self._scan = end
                self._check_size(end - self._pos - 1)
                return None
            self._check_size(trailer - self._pos - 1)
            if trailer + 1 < end and buf[trailer + 1] == CARRIAGE_RETURN:
                return self._take(trailer, trailer + 2)
            if self.tolerate_missing_cr:
                # Complete at 0x1C; what follows (a late CR, 0x0B, junk) is read as outside.
                return self._take(trailer, trailer + 1)
            if trailer + 1 == end:
                self._scan = trailer  # strict: 0x1C is the last byte held, wait for the next
                return None
            self._scan = trailer + 1  # strict mode: a lone 0x1C is payload data

    def _take(self, trailer: int, resume: int) -> bytes:
        """Cut the open frame's payload (up to `trailer`) and resume scanning at `resume`."""
        payload = bytes(self._buf[self._pos + 1 : trailer])
        self._pos, self._in_frame, self._after_trailer = resume, False, True
        return payload

    def _check_size(self, size: int) -> None:
        if size > self.max_frame_bytes:
            head = bytes(self._buf[self._pos + 1: self._pos + 1 + HEAD_BYTES])
            self._reset()
            raise FrameTooLarge(size, self.max_frame_bytes, head)

    def _compact(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._scan = max(self._scan - self._pos, 0)
            self._pos = 0

    def _reset(self) -> None:
        self._buf.clear()
        self._pos = self._scan = 0
        self._in_frame = self._after_trailer = False
