"""Workloads for several engines on one PostgreSQL database (tests/test_scale_out.py): referrals,
their updates and bookings as synthetic messages, lanes that send them at once, what the ledger
ended as, and the same messages run again, one at a time, through one engine."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enginectl import Engine, sample_payload, write_config
from sqlalchemy import create_engine, text

from engine.mllp.blocking import MLLPClient
from engine.parsing import parse


def _patient(raw: bytes, i: int) -> bytes:
    """Referral `i`'s own patient (both PID-3 ids)."""
    return raw.replace(b"100001", f"7{i:05d}".encode()).replace(b"200001", f"8{i:05d}".encode())


def referral(i: int) -> bytes:
    """REF^I12 opening referral `MFP-R-SO<i>` for patient `i`."""
    raw = sample_payload("ref_i12_v251.hl7").replace(b"MFP-R-1001", f"MFP-R-SO{i}".encode())
    return _patient(raw.replace(b"REF-I12-V251", f"SO-REF-{i}".encode()), i)


def update(i: int, tag: str, routine: bool) -> bytes:
    """REF^I13 on referral `i` (MSH-10 `SO-I13-<tag>-<i>`): priority ASAP, or back to routine."""
    raw = sample_payload("ref_i13_v251.hl7").replace(b"MFP-R-1001", f"MFP-R-SO{i}".encode())
    if routine:
        raw = raw.replace(b"A^ASAP^HL70280", b"R^Routine^HL70280")
    return _patient(raw.replace(b"REF-I13-V251", f"SO-I13-{tag}-{i}".encode()), i)


def booking(i: int, tag: str, linked: bool) -> bytes:
    """SIU^S12 booking `SCHED-A-SO<i><tag>` for patient `i`: linked to referral `i` by SCH-26,
    or without a link (the ledger's fallback match by patient)."""
    raw = sample_payload("siu_s12_v251.hl7").replace(
        b"SCHED-A-5001", f"SCHED-A-SO{i}{tag}".encode()).replace(
        b"PL-5001", f"PL-SO{i}{tag}".encode()).replace(
        b"SIU-S12-V251", f"SO-SIU-{tag}-{i}".encode())
    raw = raw.replace(b"|MFP-R-1001^PCPEHR", f"|MFP-R-SO{i}^PCPEHR".encode() if linked else b"|")
    return _patient(raw, i)


@dataclass
class Lane:
    """Messages sent in order on one connection to one engine; what each was answered (MSA-1,
    "" when the connection went before its ACK)."""

    port: int
    messages: list[bytes]
    answers: list[str] = field(default_factory=list)
    sent: int = 0  # how many were answered so far (for a test that kills the engine)

    def run(self) -> None:
        try:
            with MLLPClient("127.0.0.1", self.port, timeout=30) as client:
                for message in self.messages:
                    acks = client.exchange(message)
                    if not acks:  # the connection went: the rest is unanswered
                        break
                    self.answers.append(str(parse(acks[0])["MSA.1"]))
                    self.sent += 1
        except (OSError, ConnectionError):  # the engine was killed: the rest is unanswered
            pass
        self.answers += [""] * (len(self.messages) - len(self.answers))


def run_lanes(lanes: list[Lane], meanwhile: Callable[[], None] = lambda: None) -> None:
    """Every lane at once (a thread each); `meanwhile` runs while they do."""
    threads = [threading.Thread(target=lane.run) for lane in lanes]
    for t in threads:
        t.start()
    try:
        meanwhile()
    finally:
        for t in threads:
            t.join(120)


def control_id(message: bytes) -> str:
    return str(parse(message)["MSH.10"])


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    db = create_engine(url)
    try:
        with db.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        db.dispose()


def ledger(url: str) -> dict[str, Any]:
    """What the ledger ended as, by keys and control ids (not by row ids, which differ between
    two runs): referrals, appointments and what they matched, the history, each message's
    outcome."""
    return {
        "referrals": sorted(query(url, "SELECT key_id, status, priority, review, window_end "
                                       "FROM referrals")),
        "appointments": sorted(query(url, (
            "SELECT a.key_id, a.status, a.match, a.via, r.key_id FROM appointments a "
            "LEFT JOIN referrals r ON r.id = a.referral_id"))),
        "history": sorted(query(url, (
            "SELECT r.key_id, a.key_id, e.control_id, e.event, e.status_before, "
            "e.status_after, e.rule FROM referral_events e "
            "LEFT JOIN referrals r ON r.id = e.referral_id "
            "LEFT JOIN appointments a ON a.id = e.appointment_id")), key=repr),
        "messages": sorted(query(url, "SELECT control_id, status, error_code, ack_codes, "
                                      "ledger_effect FROM messages")),
    }


def serial_run(url: str, folder: Path, stored_from: str) -> dict[str, Any]:
    """The messages stored in `stored_from`, in id order, sent one at a time through one engine
    on the fresh database `url`: what its ledger ended as."""
    folder.mkdir()
    bodies = [bytes(r[0]) for r in query(stored_from, "SELECT raw FROM messages ORDER BY id")]
    engine = Engine(write_config(folder, url)).start()
    try:
        lane = Lane(engine.port, bodies)
        lane.run()
    finally:
        engine.stop()
    return ledger(url)
