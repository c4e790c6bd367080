"""The writer-thread pipeline against a real database: group commit, duplicates inside one
batch, and a failed commit answered AE 207 with nothing promised."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from enginectl import sample_payload
from sqlalchemy import func, select, text

from engine.ack import AckBuilder
from engine.config import parse_config
from engine.parsing import parse
from engine.pipeline import Job, Pipeline, failed
from engine.store.database import open_database
from engine.store.schema import column_names, messages

CHANNEL = parse_config({"channels": [{
    "name": "referrals", "listen": {"port": 0}, "accept": ["REF^I12-I15", "SIU^S12-S26", "ORM^O01"],
    "ack": {"application": "REFTRACK", "facility": "HUB"}}]}).channels[0]
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)  # inside the samples' windows (RF1-8 2036-07-12)


def _pipeline(url: str) -> tuple[Pipeline, object]:
    db = open_database(url)
    return Pipeline(db, {"referrals": AckBuilder("REFTRACK", "HUB")}, clock=lambda: NOW), db


def _job(raw: bytes) -> Job:
    return Job(CHANNEL, raw, "127.0.0.1:1", NOW)


def _count(db: object) -> int:
    with db.connect() as conn:  # type: ignore[attr-defined]
        return int(conn.execute(select(func.count()).select_from(messages)).scalar_one())


def test_one_batch_stores_each_message_once_and_spots_retransmissions(db_url: str) -> None:
    """A batch holding a message, its exact retransmission and a reused control id stores two
    rows: the retransmission is answered like the original and counted on its row."""
    pipeline, db = _pipeline(db_url)
    ref = sample_payload("ref_i12_v251.hl7")
    reused = ref.replace(b"MFP-R-1001", b"MFP-R-2002")
    results = pipeline.process_batch([_job(ref), _job(ref), _job(reused)])
    assert [parse(r.acks[0])["MSA.1"] for r in results] == ["AA", "AA", "AA"]
    assert [(r.retransmission, r.reused) for r in results] == [
        (False, False), (True, False), (False, True)]
    assert results[1].message_id == results[0].message_id
    assert _count(db) == 2
    with db.connect() as conn:  # type: ignore[attr-defined]
        counts = conn.execute(select(messages.c.retransmissions).order_by(messages.c.id)).all()
    assert [c[0] for c in counts] == [1, 0]
    pipeline.close()


def test_failed_commit_answers_ae_207_and_stores_nothing(sqlite_url: str) -> None:
    """When the store cannot commit, every message of the batch gets AE with ERR-3 207 (CE in
    enhanced mode), never AA; the next batch, once the store is back, is stored normally."""
    pipeline, db = _pipeline(sqlite_url)
    with db.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("ALTER TABLE messages RENAME TO messages_away"))
    results = pipeline.process_batch([_job(sample_payload("ref_i12_v251.hl7")),
                                      _job(sample_payload("enhanced_al_al_v251.hl7"))])
    assert [[parse(a)["MSA.1"] for a in r.acks] for r in results] == [["AE"], ["CE"]]
    assert {parse(r.acks[0])["ERR.3"] for r in results} == {"207"}
    assert not any(r.committed for r in results)
    with db.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("ALTER TABLE messages_away RENAME TO messages"))
    assert _count(db) == 0
    (again,) = pipeline.process_batch([_job(sample_payload("ref_i12_v251.hl7"))])
    assert parse(again.acks[0])["MSA.1"] == "AA" and again.committed
    assert _count(db) == 1
    pipeline.close()


def test_retransmission_in_the_same_batch_as_its_ae_gets_ae(sqlite_url: str) -> None:
    """A message the ledger answers AE 205, resent within the same batch, is answered AE 205
    again (docs/hl7-rules.md: the same ACK code), not AA."""
    pipeline, _db = _pipeline(sqlite_url)
    nw = sample_payload("orm_o01_v24.hl7")
    dup = nw.replace(b"ORM-O01-V24", b"ORM-O01-DUP")
    results = pipeline.process_batch([_job(nw), _job(dup), _job(dup)])
    assert [(parse(r.acks[0])["MSA.1"], parse(r.acks[0])["ERR.3"] or parse(r.acks[0])["ERR.1.4"])
            for r in results] == [("AA", ""), ("AE", "205"), ("AE", "205")]
    assert results[2].retransmission
    pipeline.close()


def test_a_mapper_bug_answers_ar_207_and_the_batch_goes_on(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception while mapping one message answers it AR 207 (stored, logged)
    and the rest of the batch is processed: the engine never stops on input."""
    import engine.prepare as pipeline_module

    real = pipeline_module.map_message

    def flaky(msg: Any, rules: Any) -> Any:
        if msg.header.control_id == "REF-I12-V23":
            raise RuntimeError("bug")
        return real(msg, rules)

    monkeypatch.setattr(pipeline_module, "map_message", flaky)
    pipeline, db = _pipeline(sqlite_url)
    results = pipeline.process_batch([_job(sample_payload("ref_i12_v23.hl7")),
                                      _job(sample_payload("ref_i12_v251.hl7"))])
    assert [(parse(r.acks[0])["MSA.1"], parse(r.acks[0])["ERR.1.4"] or parse(r.acks[0])["ERR.3"])
            for r in results] == [("AR", "207"), ("AA", "")]
    assert _count(db) == 2
    pipeline.close()


def test_the_writers_last_resort_answer_never_raises() -> None:
    """`failed` (a batch that raised) answers the fixed AR 207 even for bytes that are not HL7,
    echoing MSH-10 when it is plain ASCII; nothing is promised."""
    answer = failed({"referrals": AckBuilder()})
    for raw, control in ((b"garbage", ""), (sample_payload("ref_i12_v251.hl7"), "REF-I12-V251")):
        result = answer(_job(raw), RuntimeError("x"))
        ack = parse(result.acks[0])
        assert (ack["MSA.1"], ack["MSA.2"], ack["ERR.3"]) == ("AR", control, "207")
        assert not result.committed


def test_a_ledger_bug_marks_only_its_message_and_the_batch_is_redone(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception while applying one message's ledger changes rolls the batch
    back and redoes it with that message answered AR 207 and no ledger change; the other
    messages of the batch are stored and applied once."""
    from engine.ledger import rules

    real = rules.apply

    def flaky(ctx: Any, changes: Any) -> Any:
        if ctx.control_id == "REF-I12-V23":
            for referral in list(ctx.ledger.referrals.values()):
                ctx.ledger.update_referral(referral, status="half-written")
            raise RuntimeError("bug")
        return real(ctx, changes)

    monkeypatch.setattr(rules, "apply", flaky)
    pipeline, db = _pipeline(sqlite_url)
    results = pipeline.process_batch([_job(sample_payload("ref_i12_v251.hl7")),
                                      _job(sample_payload("ref_i12_v23.hl7")),
                                      _job(sample_payload("ref_i12_v28.hl7"))])
    assert [parse(r.acks[0])["MSA.1"] for r in results] == ["AA", "AR", "AA"]
    assert _count(db) == 3
    from engine.store.ledger.views import list_referrals
    with db.connect() as conn:  # type: ignore[attr-defined]
        assert sorted(r["status"] for r in list_referrals(conn)) == ["pending", "pending"]
    pipeline.close()


def test_a_database_locked_by_another_writer_is_ar_206_then_stored_on_resend(
        sqlite_url: str) -> None:
    """While another connection holds SQLite's write lock past the
    busy wait, the batch is AR 206 (CE 206 in enhanced mode) and nothing is stored; sent again
    once the lock is gone, it is AA.  A store failure that is no lock stays AE 207 (above)."""
    import sqlite3

    from sqlalchemy import event

    pipeline, db = _pipeline(sqlite_url)

    @event.listens_for(db, "connect")
    def _short_wait(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=100")  # the engine waits 30 s

    db.dispose()  # type: ignore[attr-defined]  # the pooled connection had the 30 s wait
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    enhanced = sample_payload("enhanced_al_al_v251.hl7")
    try:
        locked = pipeline.process_batch([_job(sample_payload("ref_i12_v251.hl7")),
                                         _job(enhanced)])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    answers = [[(parse(a)["MSA.1"], parse(a)["ERR.3.1"]) for a in r.acks] for r in locked]
    assert answers == [[("AR", "206")], [("CE", "206")]]
    assert not any(r.committed for r in locked)
    assert _count(db) == 0
    again = pipeline.process_batch([_job(sample_payload("ref_i12_v251.hl7"))])
    assert [parse(a)["MSA.1"] for a in again[0].acks] == ["AA"]
    assert _count(db) == 1
    pipeline.close()


def test_lock_failures_are_told_apart_from_store_failures() -> None:
    """AR 206 for another writer's lock (SQLite busy, PostgreSQL lock timeout, deadlock,
    serialisation failure), AE 207 for anything else (disk full, I/O)."""
    import sqlite3

    import psycopg.errors
    from sqlalchemy.exc import OperationalError

    from engine.store.batch import _locked

    def wrapped(cause: Exception) -> OperationalError:
        return OperationalError("COMMIT", {}, cause)

    assert [_locked(wrapped(c)) for c in (
        sqlite3.OperationalError("database is locked"), psycopg.errors.LockNotAvailable("x"),
        psycopg.errors.DeadlockDetected("x"), psycopg.errors.SerializationFailure("x"),
    )] == [True] * 4
    assert [_locked(wrapped(c)) for c in (
        sqlite3.OperationalError("disk I/O error"), psycopg.errors.DiskFull("x"),
    )] + [_locked(RuntimeError("x"))] == [False] * 3


KEYED = {
    "channels": [{"name": "referrals", "listen": {"port": 0}, "accept": ["REF^I12"]}],
    "destinations": [{"name": "pcp", "type": "file", "directory": "x",
                      "order": {"per_key": "PID.3.1"}}],
    "routes": [{"name": "loop", "on": ["referral.pending"], "to": ["pcp"]}]}


def _order_keys(db: Any) -> list[str]:
    from engine.store.schema import outbound

    with db.connect() as conn:
        return [str(k) for k in conn.scalars(select(outbound.c.order_key).order_by(outbound.c.id))]


def test_a_pipeline_is_complete_when_constructed(sqlite_url: str) -> None:
    """Routes, order keys and pass-through channels come in together with the configuration,
    so there is no set-up call to make in the wrong order (routes after order keys used to
    drop the per_key order of event rows): an event row for a per_key destination has its key
    both from the constructor and after a reload."""
    config = parse_config(KEYED)
    assert not any(hasattr(Pipeline, name) for name in ("route", "order_by", "answer_from"))
    db = open_database(sqlite_url)
    pipeline = Pipeline(db, {"referrals": AckBuilder()}, config, clock=lambda: NOW)
    ref = sample_payload("ref_i12_v251.hl7")
    pipeline.process_batch([Job(config.channels[0], ref, "x", NOW)])
    plain = Pipeline(db, {"referrals": AckBuilder()}, clock=lambda: NOW)
    plain.reconfigure(config)
    second = ref.replace(b"MFP-R-1001", b"MFP-R-2002").replace(b"REF-I12-V251", b"C-2")
    plain.process_batch([Job(config.channels[0], second, "x", NOW)])
    pipeline.close()
    plain.close()
    patient = parse(ref)["PID.3.1"]
    assert _order_keys(db) == [patient, patient]


def test_ledger_settings_come_from_the_config_or_alone(sqlite_url: str) -> None:
    from engine.ledger.settings import LedgerSettings

    with pytest.raises(ValueError, match="not both"):
        Pipeline(open_database(sqlite_url), {}, parse_config(KEYED), settings=LedgerSettings())


def test_importing_the_engine_leaves_the_sqlite3_module_as_it_was() -> None:
    """The store's datetime adapter is registered by open_database for a SQLite database, never
    as a side effect of importing the pipeline or the store (another user of sqlite3 in the same
    process keeps the module's own)."""
    code = ("import sqlite3, datetime\n"
            "import engine.pipeline, engine.store.sql, engine.store.database, engine.service\n"
            "adapter = sqlite3.adapters.get((datetime.datetime, sqlite3.PrepareProtocol))\n"
            "print(getattr(adapter, '__module__', None))\n"
            "engine.store.database.open_database('sqlite://', migrate=False)\n"
            "print(sqlite3.adapters[(datetime.datetime, sqlite3.PrepareProtocol)].__module__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] != "engine.store.sql"
    assert out[1] == "engine.store.sql"


def test_column_names_are_plain_strings_in_table_order() -> None:
    """The rows the hot path writes are keyed by the columns' names as plain `str` (SQLAlchemy's
    `quoted_name` is a subclass whose dict look-ups take the slow path), in the table's order,
    without the columns left out."""
    names = column_names(messages, ("id", "purged_at"))
    assert names == tuple(c.name for c in messages.c if c.name not in ("id", "purged_at"))
    assert {type(n) for n in names} == {str}
