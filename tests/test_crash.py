"""Crash safety: an engine receiving a stream is killed with SIGKILL and restarted.

An ACK is a promise (docs/architecture.md): every control id that got AA must be in the store exactly once
after the restart, and resending everything that was not acknowledged creates no duplicates.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from enginectl import Engine, numbered_referral, write_config
from sqlalchemy import create_engine, select

from engine.mllp.blocking import MLLPClient
from engine.parsing import parse
from engine.store.schema import messages


def _message(n: int) -> tuple[str, bytes]:
    """A new referral each: a unique MSH-10 and RF1-6."""
    return numbered_referral("CRASH", n)


class Sender(threading.Thread):
    """Sends its share of the stream, one frame at a time, and records what got AA."""

    def __init__(self, port: int, numbers: list[int]) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.numbers = numbers
        self.acked: list[str] = []
        self.sent: list[str] = []

    def run(self) -> None:
        try:
            with MLLPClient("127.0.0.1", self.port, timeout=5) as client:
                for n in self.numbers:
                    control, payload = _message(n)
                    self.sent.append(control)
                    acks = client.exchange(payload)
                    if not acks:
                        return
                    ack = parse(acks[0])
                    assert ack["MSA.2"] == control
                    if ack["MSA.1"] == "AA":
                        self.acked.append(control)
        except OSError:
            return  # the engine was killed under us


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_loses_no_acknowledged_message(tmp_path: Path, db_url: str, workers: int) -> None:
    """Kill -9 mid-stream; after restart every AA'd control id is stored once, and resending
    the unacknowledged ones (some may be stored already) creates no duplicates.  With two
    ingest processes the main one is killed; its worker goes with it."""
    total, streams = 4000, 4
    engine = Engine(write_config(tmp_path, db_url, top={"workers": workers})).start()
    senders = [Sender(engine.port, list(range(i, total, streams))) for i in range(streams)]
    for s in senders:
        s.start()
    deadline = time.monotonic() + 120
    while sum(len(s.acked) for s in senders) < 300 and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    engine.kill()
    for s in senders:
        s.join(10)
    acked = {c for s in senders for c in s.acked}
    assert 300 <= len(acked) < total, "the kill must land mid-stream"

    engine.start()
    try:
        assert _stored(db_url, acked) == dict.fromkeys(acked, 1)
        missing = [n for n in range(total) if _message(n)[0] not in acked]
        with MLLPClient("127.0.0.1", engine.port) as client:
            for n in missing:
                control, payload = _message(n)
                (ack,) = client.exchange(payload)
                assert (parse(ack)["MSA.1"], parse(ack)["MSA.2"]) == ("AA", control)
    finally:
        assert engine.stop() == 0
    everything = {_message(n)[0] for n in range(total)}
    assert _stored(db_url, everything) == dict.fromkeys(everything, 1)


def _stored(url: str, controls: set[str]) -> dict[str, int]:
    """How many rows each of these control ids has."""
    db = create_engine(url)
    with db.connect() as conn:
        rows = conn.execute(select(messages.c.control_id)).scalars().all()
    db.dispose()
    counts: dict[str, int] = {}
    for c in rows:
        if c in controls:
            counts[c] = counts.get(c, 0) + 1
    return counts
