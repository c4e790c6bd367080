"""Incremental MLLP frame decoding: bytes in, complete HL7 payloads out (HL7-SPEC §1).

This module owns the MLLP envelope only: finding `0x0B` ... `0x1C 0x0D` in a stream that arrives
in arbitrary pieces, discarding and counting junk between frames, and capping the frame size.  It
knows nothing about Twisted or HL7 content; the protocol feeds it whatever each read returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.errors import EngineError

START_BLOCK = 0x0B  # VT: opens a frame
END_BLOCK = 0x1C  # FS: closes a frame, followed by CR
# MLLP release 2 (HL7-SPEC §1): the receiver's transport-level answer, a frame of one byte, sent
# once the frame is on safe storage (ACK) or could not be stored (NAK); never instead of the HL7
# ACK.
COMMIT_ACK, COMMIT_NAK = b"\x06", b"\x15"
CARRIAGE_RETURN = 0x0D
LINE_FEED = 0x0A
_STRAY_AFTER_TRAILER = (CARRIAGE_RETURN, LINE_FEED)


class FrameTooLarge(EngineError):
    """An open frame's payload grew past `max_frame_bytes`; the caller drops the connection."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"MLLP frame payload of at least {size} bytes exceeds the {limit}-byte limit"
        )
        self.size = size
        self.limit = limit


@dataclass(slots=True)
class FrameDecoder:
    """Per-connection MLLP decoder: `feed()` each read, `eof()` once when the peer closes.

    `tolerate_missing_cr` accepts `0x1C` not followed by CR as the end of a frame (lenient mode,
    §1 "Missing CR after 0x1C"); otherwise only `0x1C 0x0D` ends a frame and a lone `0x1C` is data.
    `junk_bytes` counts every byte discarded outside a frame, including partial frames abandoned by
    a new `0x0B` or by EOF; CR/LF directly after a trailer are ignored without being counted.
    """

    max_frame_bytes: int = 10 * 1024 * 1024
    tolerate_missing_cr: bool = True
    junk_bytes: int = 0
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
    def buffered(self) -> int:
        """Bytes currently held: the open frame (with its 0x0B), or a pending CR/LF run."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> list[bytes]:
        """Add one read's bytes; return the payloads of every frame they complete, in order.

        Raises `FrameTooLarge` when the open frame exceeds the limit; the decoder is then reset.
        """
        self._buf += data
        frames: list[bytes] = []
        while (self._in_frame or self._seek_start()) and (payload := self._seek_end()) is not None:
            frames.append(payload)
        self._compact()
        return frames

    def eof(self) -> list[bytes]:
        """The peer closed: complete a frame cut after its `0x1C` (lenient mode), drop the rest."""
        frames: list[bytes] = []
        buf, end = self._buf, len(self._buf)
        if self._in_frame and self.tolerate_missing_cr and buf[end - 1] == END_BLOCK:
            frames.append(self._take(end - 1, end))
        elif not self._after_trailer:
            self.junk_bytes += end - self._pos
        self._reset()
        return frames

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
            if trailer + 1 == end:
                self._scan = trailer  # 0x1C is the last byte held: wait for the next one.
                return None
            if buf[trailer + 1] == CARRIAGE_RETURN:
                return self._take(trailer, trailer + 2)
            if self.tolerate_missing_cr:
                # The byte after 0x1C is not consumed: it is 0x0B, or junk/stray CR-LF.
                return self._take(trailer, trailer + 1)
            self._scan = trailer + 1  # strict mode: a lone 0x1C is payload data

    def _take(self, trailer: int, resume: int) -> bytes:
        """Cut the open frame's payload (up to `trailer`) and resume scanning at `resume`."""
        payload = bytes(self._buf[self._pos + 1 : trailer])
        self._pos, self._in_frame, self._after_trailer = resume, False, True
        return payload

    def _check_size(self, size: int) -> None:
        if size > self.max_frame_bytes:
            self._reset()
            raise FrameTooLarge(size, self.max_frame_bytes)

    def _compact(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._scan = max(self._scan - self._pos, 0)
            self._pos = 0

    def _reset(self) -> None:
        self._buf.clear()
        self._pos = self._scan = 0
        self._in_frame = self._after_trailer = False
