"""Several engines on one database (docs/operations.md's scale-out), over real TCP into SQLite and
PostgreSQL: each destination is delivered by one engine at a time (its lease), so no message goes
twice and queue order holds; when that engine dies, another takes the destination over."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from enginectl import Engine, sample_payload, write_config
from sink import Sink

from engine.mllp.blocking import MLLPClient
from engine.parsing import parse


def _message(n: int) -> bytes:
    return (sample_payload("ref_i12_v251.hl7").replace(b"REF-I12-V251", f"ME-{n:03d}".encode())
            .replace(b"MFP-R-1001", f"ME-R-{n:03d}".encode()))


def _send(engine: Engine, numbers: range) -> None:
    with MLLPClient("127.0.0.1", engine.port, timeout=10) as client:
        for n in numbers:
            assert parse(client.exchange(_message(n))[0])["MSA.1"] == "AA"


def _wait_for(sink: Sink, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len({parse(m)["MSH.10"] for m in sink.received}) < count \
            and time.monotonic() < deadline:
        time.sleep(0.05)


def _holds_the_lease(engine: Engine) -> bool:
    time.sleep(0.6)  # the log is flushed twice a second
    return any(e.get("event") == "delivery.lease_taken" for e in engine.events())


def test_engines_sharing_a_database_deliver_each_message_once(tmp_path: Path,
                                                               db_url: str) -> None:
    sink = Sink()
    top = {"destinations": [{"name": "down", "type": "mllp", "host": "127.0.0.1",
                             "port": sink.port, "ack_timeout_s": 5}],
           "routes": [{"name": "all", "from": "referrals", "to": ["down"]}]}
    engines = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        engines.append(Engine(write_config(tmp_path / name, db_url, top=top)).start())
    a, b = engines
    try:
        for start in range(0, 20, 5):  # both engines take messages, in turns
            _send(a, range(start, start + 5))
            _send(b, range(100 + start, 105 + start))
        _wait_for(sink, 40)
        holders = [e for e in engines if _holds_the_lease(e)]
        assert len(holders) == 1, "exactly one engine delivers the destination"
        holder = holders[0]
        other = b if holder is a else a
        assert other.wait_for("delivery.standby")
        holder.kill()  # its lease goes with it
        _send(other, range(200, 205))
        _wait_for(sink, 45)
        assert _holds_the_lease(other)
    finally:
        for engine in engines:
            engine.stop()
        sink.close()
    received = [parse(m)["MSH.10"] for m in sink.received]
    expected = {f"ME-{n:03d}" for n in [*range(20), *range(100, 120), *range(200, 205)]}
    assert Counter(received) == Counter(expected)  # every message, each once
