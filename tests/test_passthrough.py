"""Pass-through ACKs end to end (Mirth's "respond from destination"): a sender, the engine and a
downstream MLLP system, over real TCP, into a real database.

The sender's ACK is the downstream's answer relayed (MSA-1 and ERR copied, MSH and MSA-2
rebuilt); without an answer in time it is AE 207.  The message, the downstream's ACK and the
relayed ACK are all stored.  A resend after a negative answer is delivered again; a resend after
a timeout waits for the copy already queued.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from enginectl import ROOT, Engine, sample_payload, table_rows, write_config
from sink import Sink, ack_for

from engine.mllp.blocking import MLLPClient
from engine.parsing import parse
from engine.store.schema import deliveries, messages, outbound, relayed_acks

REF = sample_payload("ref_i12_v251.hl7")
CONTROL = parse(REF)["MSH.10"]


def _engine(tmp_path: Path, db_url: str, sink: Sink, timeout_s: float = 10,
            **channel: Any) -> Engine:
    config = write_config(tmp_path, db_url, top={
        "destinations": [{"name": "specialist-ehr", "type": "mllp", "host": "127.0.0.1",
                          "port": sink.port, "ack_timeout_s": 1,
                          "retry": {"initial_s": 0.2, "max_s": 0.5, "max_attempts": 50}}],
        "routes": [{"name": "to-specialist", "from": "referrals", "to": ["specialist-ehr"]}],
    }, ack={"application": "REFTRACK", "facility": "HUB", "mode": "downstream",
            "destination": "specialist-ehr", "timeout_s": timeout_s}, **channel)
    return Engine(config).start()


def _send(port: int, payload: bytes = REF) -> Any:
    with MLLPClient("127.0.0.1", port, timeout=15) as client:
        (ack,) = client.exchange(payload, 1, 15)
    return parse(ack)


def test_downstream_aa_and_ae_are_relayed_and_stored(tmp_path: Path, db_url: str) -> None:
    """The first copy gets AE with an ERR, relayed as is for the sender's control id; the row
    is then a dead letter (the sender was told).  The sender's resend goes out again, gets AA,
    and that AA is relayed.  Both relayed ACKs and both downstream ACKs are stored."""
    err = b"ERR||RF1^1^6|101^Required field missing^HL70357|E||||downstream says no\r"

    def policy(message: bytes, n: int) -> bytes:
        return ack_for(message, "AE") + err if n == 0 else ack_for(message)

    sink = Sink(policy)
    engine = _engine(tmp_path, db_url, sink)
    try:
        first = _send(engine.port)
        assert (first["MSA.1"], first["MSA.2"], first["MSH.3"]) == ("AE", CONTROL, "REFTRACK")
        assert (first["ERR.3.1"], first["ERR.8"]) == ("101", "downstream says no")
        second = _send(engine.port)
        assert (second["MSA.1"], second["MSA.2"], second["ERR.3.1"]) == ("AA", CONTROL, "")
    finally:
        assert engine.stop() == 0
        sink.close()
    assert [parse(m)["MSH.10"] for m in sink.received] == [CONTROL, CONTROL]
    (message,) = table_rows(db_url, table=messages)
    assert (message["ack_codes"], message["retransmissions"]) == ("AA", 1)
    relayed = table_rows(db_url, table=relayed_acks)
    assert [(r["code"], r["downstream_code"]) for r in relayed] == [("AE", "AE"), ("AA", "AA")]
    assert all(r["message_id"] == message["id"] for r in relayed)
    assert [parse(r["ack"])["MSA.1"] for r in table_rows(db_url, table=deliveries)] == ["AE", "AA"]
    assert [r["status"] for r in table_rows(db_url, table=outbound)] == ["delivered"]
    shown = subprocess.run(
        [sys.executable, "-m", "engine", "show", str(message["id"]), "--json",
         "--config", str(tmp_path / "channels.yaml")],
        cwd=ROOT, capture_output=True, check=True).stdout
    assert [(r["ack"], r["downstream_ack"]) for r in json.loads(shown)["relayed_acks"]] == [
        ("AE", "AE"), ("AA", "AA")]


def test_downstream_ar_is_relayed(tmp_path: Path, sqlite_url: str) -> None:
    """A downstream AR reaches the sender as AR."""
    sink = Sink(lambda m, _n: ack_for(m, "AR"))
    engine = _engine(tmp_path, sqlite_url, sink)
    try:
        assert _send(engine.port)["MSA.1"] == "AR"
    finally:
        assert engine.stop() == 0
        sink.close()


def test_no_answer_in_time_is_ae_207_and_a_resend_waits_for_the_queued_copy(
        tmp_path: Path, sqlite_url: str) -> None:
    """The downstream stays silent at first: the sender gets AE 207 after the channel's
    timeout, the copy stays queued and is retried until the downstream answers AA; a resend of
    the same message is then answered with that stored AA, and nothing more goes downstream."""
    silent = 3

    def policy(message: bytes, n: int) -> bytes | None:
        return None if n < silent else ack_for(message)

    sink = Sink(policy)
    engine = _engine(tmp_path, sqlite_url, sink, timeout_s=0.5)
    try:
        first = _send(engine.port)
        assert (first["MSA.1"], first["MSA.2"], first["ERR.3.1"]) == ("AE", CONTROL, "207")
        assert "specialist-ehr" in first["ERR.8"]
        deadline = time.monotonic() + 20
        while [r["status"] for r in table_rows(sqlite_url, table=outbound)] != ["delivered"]:
            assert time.monotonic() < deadline, "the queued copy was never delivered"
            time.sleep(0.1)
        second = _send(engine.port)
        assert (second["MSA.1"], second["MSA.2"]) == ("AA", CONTROL)
    finally:
        assert engine.stop() == 0
        sink.close()
    assert len(sink.received) == silent + 1
    codes = [(r["code"], r["downstream_code"]) for r in table_rows(sqlite_url, table=relayed_acks)]
    assert codes[0] == ("AE", "") and codes[-1] == ("AA", "AA")
    assert [r["status"] for r in table_rows(sqlite_url, table=outbound)] == ["delivered"]


def test_a_message_the_route_does_not_take_is_acked_on_commit(tmp_path: Path,
                                                              sqlite_url: str) -> None:
    """Pass-through needs a routed copy: a message the channel rejects itself (AR, unsupported
    processing id) is answered by the engine at once, and nothing goes downstream."""
    sink = Sink()
    engine = _engine(tmp_path, sqlite_url, sink)
    try:
        ack = _send(engine.port, sample_payload("reject_processing_id.hl7"))
        assert ack["MSA.1"] == "AR"
    finally:
        assert engine.stop() == 0
        sink.close()
    assert sink.received == []


def test_release_2_commit_ack_goes_out_before_the_downstream_answers(tmp_path: Path,
                                                                      sqlite_url: str) -> None:
    """Pass-through on an MLLP release 2 channel: the sender gets the commit ACK as soon as
    the message is stored, while the downstream still holds its answer; the relayed AA
    follows once the downstream answers."""
    answer = threading.Event()
    sink = Sink(lambda m, _n: ack_for(m) if answer.wait(15) else None)
    engine = _engine(tmp_path, sqlite_url, sink, framing={"mllp_release": 2})
    try:
        with MLLPClient("127.0.0.1", engine.port, timeout=15) as client:
            client.send(REF)
            first = client.receive(1, 15)
            downstream_had_answered = answer.is_set()
            answer.set()
            (relayed,) = client.receive(1, 15)
    finally:
        answer.set()
        assert engine.stop() == 0
        sink.close()
    assert (first, downstream_had_answered) == ([b"\x06"], False)
    assert (parse(relayed)["MSA.1"], parse(relayed)["MSA.2"]) == ("AA", CONTROL)
