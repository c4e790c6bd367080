"""End to end over real loopback TCP into a real database (SQLite file, and PostgreSQL).

The engine runs as a subprocess (`python -m engine run`), exactly as an operator starts it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from enginectl import SAMPLES, Engine, sample_payload, write_config
from sqlalchemy import create_engine, func, select

from engine.mllp.blocking import MLLPClient
from engine.parsing import parse
from engine.store.schema import messages

MANIFEST: dict[str, Any] = yaml.safe_load((SAMPLES / "manifest.yaml").read_text())


@pytest.fixture(name="engine")
def engine_fixture(db_url: str, tmp_path: Path) -> Iterator[tuple[Engine, str]]:
    eng = Engine(write_config(tmp_path, db_url)).start()
    try:
        yield eng, db_url
    finally:
        eng.stop()


def _expected(name: str) -> list[dict[str, Any]]:
    """The answer with the ledger on: the manifest's `ledger` entry where it has one."""
    entry = MANIFEST[name]
    return [entry["ledger"]] if "ledger" in entry else list(entry["acks"])


def _story_order() -> list[str]:
    """The corpus in MSH-7 order, which satisfies every `requires` of the manifest."""
    def stamp(name: str) -> str:
        try:
            return parse(sample_payload(name))["MSH.7"]
        except Exception:
            return ""
    return sorted(MANIFEST, key=lambda n: (stamp(n), n))


def _exchange(client: MLLPClient, name: str) -> list[bytes]:
    expected = _expected(name)
    return client.exchange(sample_payload(name), max(len(expected), 1),
                           timeout=10 if expected else 0.5)


def test_every_sample_gets_its_manifest_answer(engine: tuple[Engine, str]) -> None:
    """Each sample, replayed in MSH-7 order, is answered with exactly the ACKs the manifest
    lists (MSA-1, MSA-2 echoing MSH-10, ERR-3 and location; the ledger's AE codes for the
    content rows), and every frame is stored once."""
    eng, url = engine
    with MLLPClient("127.0.0.1", eng.port) as client:
        for name in _story_order():
            acks = _exchange(client, name)
            want = _expected(name)
            assert len(acks) == len(want), name
            sent = sample_payload(name)
            for ack, expect in zip(acks, want, strict=True):
                msg = parse(ack)
                assert msg["MSA.1"] == expect["msa1"], name
                control_id = expect.get("msa2", _control_id(sent))
                assert msg["MSA.2"] == control_id, name
                if "err3" in expect:
                    code = msg["ERR.3"] or msg["ERR.1.4"]
                    assert code == expect["err3"], name
                if "location" in expect:
                    where = msg.raw("ERR.2") or "^".join(msg.raw("ERR.1").split("^")[:3])
                    assert where == expect["location"], name
    db = create_engine(url)
    with db.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(messages)).scalar_one()
    db.dispose()
    assert stored == len(MANIFEST)


def _control_id(payload: bytes) -> str:
    try:
        return parse(payload)["MSH.10"]
    except Exception:
        return ""


def test_retransmission_is_reacked_not_stored_twice(engine: tuple[Engine, str]) -> None:
    """The same sender + MSH-10 + bytes sent again gets the same ACK code and no second row;
    the same key with other bytes is stored and flagged control_id_reused (docs/hl7-rules.md)."""
    eng, url = engine
    original = sample_payload("ref_i12_v251.hl7")
    changed = original.replace(b"MFP-R-1001", b"MFP-R-1999")
    assert changed != original
    with MLLPClient("127.0.0.1", eng.port) as client:
        first = parse(client.exchange(original)[0])
        again = parse(client.exchange(original)[0])
        reused = parse(client.exchange(changed)[0])
        rejected = client.exchange(sample_payload("reject_version.hl7"))
        rejected_again = client.exchange(sample_payload("reject_version.hl7"))
    assert (first["MSA.1"], again["MSA.1"], reused["MSA.1"]) == ("AA", "AA", "AA")
    assert parse(rejected[0])["MSA.1"] == parse(rejected_again[0])["MSA.1"] == "AR"
    assert parse(rejected_again[0])["ERR.1.4"] == "203"
    db = create_engine(url)
    with db.connect() as conn:
        rows = conn.execute(select(messages.c.control_id, messages.c.control_id_reused,
                                   messages.c.retransmissions).order_by(messages.c.id)).all()
    db.dispose()
    control = first["MSA.2"]
    assert [(r[0], bool(r[1]), r[2]) for r in rows] == [
        (control, False, 1), (control, True, 0), ("REJ-VERSION-22", False, 1)]


def test_several_frames_in_one_write_are_answered_in_order(engine: tuple[Engine, str]) -> None:
    """Frames pipelined in one TCP write come back as ACKs in the same order."""
    eng, _ = engine
    names = ["ref_i12_v251.hl7", "reject_version.hl7", "siu_s12_v251.hl7", "orm_o01_v24.hl7"]
    with MLLPClient("127.0.0.1", eng.port) as client:
        client.sock.sendall(b"".join(b"\x0b" + sample_payload(n) + b"\x1c\r" for n in names))
        acks = client.receive(len(names))
    assert [parse(a)["MSA.2"] for a in acks] == [_control_id(sample_payload(n)) for n in names]
    assert [parse(a)["MSA.1"] for a in acks] == ["AA", "AR", "AA", "AA"]


def test_garbage_gets_ar_and_the_connection_stays_open(engine: tuple[Engine, str]) -> None:
    """Non-HL7 bytes in a frame get AR with an empty MSA-2; the next frame is served."""
    eng, _ = engine
    with MLLPClient("127.0.0.1", eng.port) as client:
        garbage = parse(client.exchange(b"GET / HTTP/1.0\r\n\r\n")[0])
        good = parse(client.exchange(sample_payload("siu_s12_v251.hl7"))[0])
    assert (garbage["MSA.1"], garbage["MSA.2"], garbage["ERR.3"]) == ("AR", "", "100")
    assert good["MSA.1"] == "AA"
