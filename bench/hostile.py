"""Hostile MLLP traffic for the soak (`bench.soak`): one kind per abuse, each a bounded attempt.

Every attempt opens its own loopback connection, does one kind of harm, and records what came
back: the MSA-1 of each answer (`AA`, `AE`, `AR`, ...), `nothing` (no answer within the wait),
or `closed` (the engine closed or reset the connection).  Frames built from synthetic messages
carry control ids `H<kind letter><stamp><seq>` (`HOSTILE_IDS`), so they never collide with valid
traffic; every frame's SHA-256 is kept (`Hostile.digests`), so the soak can count what the engine
stored of each kind from the `messages.digest` column, whatever a mutation did to MSH-10.

Kinds (`KINDS`; `--no-hostile KIND` in bench.soak turns one off):
  flip       1-4 bit flips in a synthetic REF/SIU (7-bit only, never 0x0B/0x1C: one frame stays one)
  truncate   a synthetic message cut at a random length, properly framed
  poison     non-ASCII in MSH-12 (`\\xb22.5.1`)
  bignum     an SIU whose SCH-9 (appointment duration, NM) is twenty nines
  random     a frame of random bytes
  junk       random bytes, a valid message, more junk, another valid message, on one connection
  oversize   a frame 1 KiB over the channel's max_frame_bytes
  halfframe  the first half of a frame, then close
  slowloris  a valid frame written one byte per second (`SLOWLORIS_BPS`), for the whole soak
  noread     a burst of valid frames whose ACKs are never read, held open a while, then reset
  drop       bursts of connections opened and closed at once (half of them reset)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.loadgen import END, START, msa_fields
from bench.synth import Message, Synth

KINDS = ("flip", "truncate", "poison", "bignum", "random", "junk", "oversize", "halfframe",
         "slowloris", "noread", "drop")
HOSTILE_IDS = {"flip": "HF", "truncate": "HT", "poison": "HP", "bignum": "HB", "random": "HX",
               "junk": "HJ", "oversize": "HO", "halfframe": "HH", "slowloris": "HS",
               "noread": "HR", "drop": "HD"}
ANSWER_WAIT_S = 5.0  # how long an attempt waits for each answer
SLOWLORIS_BPS = 1.0
NOREAD_FRAMES = 300
NOREAD_HOLD_S = 5.0
DROP_BURST = 10


async def open_stream(host: str, port: int, timeout: float
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A loopback connection with TCP_NODELAY set, so our own small writes leave at once."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


@dataclass(slots=True)
class KindTally:
    """One kind's attempts: how many, frames and bytes sent, and what came back."""

    attempts: int = 0
    frames: int = 0
    bytes_sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "frames": self.frames, "bytes_sent": self.bytes_sent,
                "outcomes": dict(sorted(self.outcomes.items()))}


class HostileSynth(Synth):
    """Synthetic REF/SIU whose MSH-10 starts with the kind's `H?` prefix."""

    def __init__(self, kind: str, mix: tuple[str, ...] = ("ref", "siu")) -> None:
        super().__init__(mix)
        self._prefix = HOSTILE_IDS[kind] + self._prefix[1:]


class Hostile:
    """The attempts of every kind against host:port, sharing one seeded random source."""

    def __init__(self, host: str, port: int, max_frame_bytes: int, seed: int) -> None:
        self.host, self.port = host, port
        self.max_frame_bytes = max_frame_bytes
        self.rng = random.Random(seed)
        self.tallies = {kind: KindTally() for kind in KINDS}
        self.digests: dict[str, str] = {}  # sha256 of a payload sent -> its kind
        self._synth = {kind: HostileSynth(kind, ("siu",) if kind == "bignum" else ("ref", "siu"))
                       for kind in KINDS}

    async def attempt(self, kind: str, deadline: float) -> None:
        """One attempt of `kind`; `deadline` (monotonic) bounds the long-lived kinds."""
        if deadline - time.monotonic() < 1.0:
            return  # too late to start one
        tally = self.tallies[kind]
        tally.attempts += 1
        try:
            await getattr(self, f"_{kind}")(tally, deadline)
        except (ConnectionError, OSError) as exc:
            tally.outcomes[f"error: {type(exc).__name__}"] += 1

    # --- connections and answers ---------------------------------------------------------

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await open_stream(self.host, self.port, ANSWER_WAIT_S)

    async def _send(self, tally: KindTally, writer: asyncio.StreamWriter, data: bytes,
                    frames: int = 1) -> None:
        writer.write(data)
        tally.frames += frames
        tally.bytes_sent += len(data)
        await asyncio.wait_for(writer.drain(), ANSWER_WAIT_S)

    async def _answers(self, tally: KindTally, reader: asyncio.StreamReader, count: int) -> None:
        """Wait for `count` answers; record each one's MSA-1, or why it never came."""
        for _ in range(count):
            try:
                ack = await asyncio.wait_for(reader.readuntil(END), ANSWER_WAIT_S)
            except TimeoutError:
                tally.outcomes["nothing"] += 1
                return
            except (asyncio.IncompleteReadError, ConnectionError):
                tally.outcomes["closed"] += 1
                return
            except asyncio.LimitOverrunError:
                tally.outcomes["an answer over 64 KiB"] += 1
                return
            tally.outcomes[msa_fields(ack)[0].decode(errors="replace")] += 1

    def _frame(self, kind: str, payload: bytes) -> bytes:
        """`payload` in its MLLP envelope, its digest kept under `kind`."""
        self.digests[hashlib.sha256(payload).hexdigest()] = kind
        return START + payload + END

    async def _one_frame(self, tally: KindTally, kind: str, payload: bytes) -> None:
        reader, writer = await self._open()
        try:
            await self._send(tally, writer, self._frame(kind, payload))
            await self._answers(tally, reader, 1)
        finally:
            writer.close()

    def _message(self, kind: str) -> Message:
        return self._synth[kind].next()

    # --- the kinds -----------------------------------------------------------------------

    async def _flip(self, tally: KindTally, _deadline: float) -> None:
        data = bytearray(self._message("flip").payload)
        for _ in range(self.rng.randint(1, 4)):
            at = self.rng.randrange(len(data))
            flipped = data[at] ^ (1 << self.rng.randrange(7))
            if flipped not in (START[0], END[0]):
                data[at] = flipped
        await self._one_frame(tally, "flip", bytes(data))

    async def _truncate(self, tally: KindTally, _deadline: float) -> None:
        payload = self._message("truncate").payload
        await self._one_frame(tally, "truncate", payload[:self.rng.randrange(1, len(payload))])

    async def _poison(self, tally: KindTally, _deadline: float) -> None:
        payload = self._message("poison").payload
        await self._one_frame(tally, "poison", payload.replace(b"|P|2.5.1\r", b"|P|\xb22.5.1\r", 1))

    async def _bignum(self, tally: KindTally, _deadline: float) -> None:
        payload = self._message("bignum").payload
        await self._one_frame(tally, "bignum", payload.replace(b"|30|min", b"|" + b"9" * 20 + b"|min", 1))

    async def _random(self, tally: KindTally, _deadline: float) -> None:
        body = bytes(b for b in self.rng.randbytes(self.rng.randint(1, 2000))
                     if b not in (START[0], END[0]))
        await self._one_frame(tally, "random", body)

    async def _junk(self, tally: KindTally, _deadline: float) -> None:
        def junk() -> bytes:
            return bytes(b for b in self.rng.randbytes(self.rng.randint(1, 300))
                         if b != START[0])

        first, second = self._message("junk"), self._message("junk")
        data = b"".join((junk(), self._frame("junk", first.payload), junk(),
                         self._frame("junk", second.payload)))
        reader, writer = await self._open()
        try:
            await self._send(tally, writer, data, frames=2)
            await self._answers(tally, reader, 2)
        finally:
            writer.close()

    async def _oversize(self, tally: KindTally, _deadline: float) -> None:
        head = self._message("oversize").payload
        filler = b"NTE|1||" + b"X" * 200 + b"\r"
        body = head + filler * ((self.max_frame_bytes + 1024 - len(head)) // len(filler) + 1)
        reader, writer = await self._open()
        try:
            try:
                await self._send(tally, writer, self._frame("oversize", body))
            except (ConnectionError, TimeoutError):
                tally.outcomes["closed"] += 1  # reset while we were still writing
                return
            await self._answers(tally, reader, 1)
        finally:
            writer.close()

    async def _halfframe(self, tally: KindTally, _deadline: float) -> None:
        payload = self._message("halfframe").payload
        reader, writer = await self._open()
        try:
            self._frame("halfframe", payload)  # counted if the half were stored whole
            await self._send(tally, writer, START + payload[:len(payload) // 2])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.5)
                tally.outcomes["answered"] += 1
                return
            tally.outcomes["nothing"] += 1
        finally:
            writer.close()

    async def _slowloris(self, tally: KindTally, deadline: float) -> None:
        data = self._frame("slowloris", self._message("slowloris").payload)
        reader, writer = await self._open()
        try:
            for i in range(len(data)):
                if time.monotonic() + 1 / SLOWLORIS_BPS > deadline:
                    tally.outcomes["unfinished at the deadline"] += 1
                    return
                try:
                    await self._send(tally, writer, data[i:i + 1], frames=int(i == 0))
                except (ConnectionError, TimeoutError):
                    tally.outcomes["closed"] += 1
                    return
                await asyncio.sleep(1 / SLOWLORIS_BPS)
            await self._answers(tally, reader, 1)
        finally:
            writer.close()

    async def _noread(self, tally: KindTally, deadline: float) -> None:
        reader, writer = await self._open()
        sock = writer.get_extra_info("socket")
        try:
            for _ in range(NOREAD_FRAMES):
                try:
                    payload = self._message("noread").payload
                    await self._send(tally, writer, self._frame("noread", payload))
                except TimeoutError:
                    tally.outcomes["writes blocked (engine stopped reading)"] += 1
                    break
            else:
                tally.outcomes["all written, ACKs left unread"] += 1
            await asyncio.sleep(max(0.0, min(NOREAD_HOLD_S, deadline - time.monotonic())))
        finally:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # reset: unread ACKs and all

    async def _drop(self, tally: KindTally, _deadline: float) -> None:
        for i in range(DROP_BURST):
            _, writer = await self._open()
            if i % 2:
                writer.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                tally.outcomes["reset at once"] += 1
            else:
                writer.close()
                tally.outcomes["closed at once"] += 1
