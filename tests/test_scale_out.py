"""Several engines ingesting into one PostgreSQL database at once (docs/operations.md's
scale-out): no lock covers a batch, each locks the keys it touches (engine.store.keylocks).
Two and three engines take the same referrals' updates, the same patients' fallback bookings and
the same retransmissions at once, one is killed mid-load; every ACKed message is stored once,
and the ledger ends as the same messages leave it when run one at a time through one engine."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import scaleload
from enginectl import Engine, sample_payload, write_config
from pgcluster import PgCluster
from scaleload import Lane, booking, control_id, ledger, query, referral, run_lanes, update
from sqlalchemy import create_engine, event

from engine.ack import AckBuilder
from engine.config import parse_config
from engine.errors import Location
from engine.mappings.changes import EI, AppointmentChange, PatientId, ReferralChange
from engine.parsing import parse
from engine.pipeline import LOCK_RETRIES, Job, Pipeline
from engine.store import keylocks
from engine.store.database import open_database

N = 12  # referrals, each with its own patient


def _engines(tmp_path: Path, url: str, count: int) -> list[Engine]:
    engines = []
    for name in "abc"[:count]:
        (tmp_path / name).mkdir()
        engines.append(Engine(write_config(tmp_path / name, url)).start())
    return engines


def _stored_once(url: str, messages: list[bytes]) -> None:
    counts = Counter(str(r[0]) for r in query(url, "SELECT control_id FROM messages"))
    assert {control_id(m): counts[control_id(m)] for m in messages} == {
        control_id(m): 1 for m in messages}


def test_two_engines_take_the_same_referrals_at_once_and_end_as_a_serial_run(
        tmp_path: Path, pg_server: PgCluster, pg_url: str) -> None:
    a, b = _engines(tmp_path, pg_url, 2)
    refs = [referral(i) for i in range(N)]
    later = [update(i, "A", False) for i in range(N)], [
        m for i in reversed(range(N)) for m in (booking(i, "L", True), booking(i, "FA", False))], [
        update(i, "B", True) for i in reversed(range(N))], [booking(i, "FB", False) for i in range(N)]
    try:
        # Every referral reaches both engines at once: one stores it, the other answers the
        # same AA for a retransmission.
        first = [Lane(a.port, refs), Lane(b.port, refs)]
        run_lanes(first)
        # Both engines update and book every referral at once: I13s from both, a booking linked
        # by its key from one, fallback bookings by the same patient from both.
        lanes = [Lane(e.port, m) for e, m in zip((a, a, b, b), later, strict=True)]
        run_lanes(lanes)
    finally:
        for engine in (a, b):
            engine.stop()
    assert [lane.answers for lane in first + lanes] == [["AA"] * len(lane.messages)
                                                        for lane in first + lanes]
    _stored_once(pg_url, refs + [m for batch in later for m in batch])
    assert sorted(query(pg_url, "SELECT control_id, retransmissions FROM messages "
                                "WHERE control_id LIKE 'SO-REF-%'")) == sorted(
        (control_id(m), 1) for m in refs)
    serial = scaleload.serial_run(pg_server.url(pg_server.create_database()),
                                  tmp_path / "serial", pg_url)
    assert ledger(pg_url) == serial


def test_three_engines_one_killed_mid_load_lose_no_acked_message(
        tmp_path: Path, pg_server: PgCluster, pg_url: str) -> None:
    engines = _engines(tmp_path, pg_url, 3)
    a, b, c = engines
    refs = [referral(i) for i in range(N)]
    work = ([update(i, "A", False) for i in range(N)],
            [booking(i, "L", True) for i in reversed(range(N))],
            [m for i in range(N) for m in (update(i, "B", True), booking(i, "FB", False),
                                          booking(i, "FC", False))])
    try:
        run_lanes([Lane(e.port, refs[k::3]) for k, e in enumerate(engines)])
        lanes = [Lane(e.port, m) for e, m in zip(engines, work, strict=True)]
        doomed = lanes[2]

        def kill_midway() -> None:
            deadline = time.monotonic() + 60
            while doomed.sent < len(doomed.messages) // 3 and time.monotonic() < deadline:
                time.sleep(0.005)
            c.kill()

        run_lanes(lanes, kill_midway)
        acked = [m for lane in lanes for m, answer in zip(lane.messages, lane.answers,
                                                          strict=True) if answer == "AA"]
        _stored_once(pg_url, acked)  # nothing ACKed is lost, nothing is stored twice
        assert len(acked) < sum(map(len, work))  # the kill cost answers
        # The sender of the killed engine's connection sends what was not answered again,
        # through another engine (the load balancer's next pick).
        again = Lane(a.port, [m for m, answer in zip(doomed.messages, doomed.answers, strict=True)
                              if answer != "AA"])
        run_lanes([again])
    finally:
        for engine in engines:
            engine.stop()
    assert all(lane.answers == ["AA"] * len(lane.messages) for lane in (*lanes[:2], again))
    _stored_once(pg_url, refs + [m for batch in work for m in batch])
    serial = scaleload.serial_run(pg_server.url(pg_server.create_database()),
                                  tmp_path / "serial", pg_url)
    assert ledger(pg_url) == serial


def test_a_batch_locks_its_keys_sorted_and_once() -> None:
    """Dedupe keys, referral keys (own, external, links), appointment keys and patient ids;
    a key named twice is locked once, the list ascends."""
    patient = PatientId("700001", "NORTHCLINIC")
    where = Location.parse("RF1^1^6")
    assert where is not None
    ref = ReferralChange(event="referral.new", source="REF", key=EI("MFP-R-1", "PCPEHR"),
                         key_location=where, trigger="REF^I12",
                         patient_ids=(patient,), external_ids=(EI("X-9", "OTHER"),))
    siu = AppointmentChange(trigger="S12", key=EI("SCHED-A-1", "SCHED"), status="booked",
                            placer_order_numbers=(EI("MFP-R-1", "PCPEHR"),),
                            patient_ids=(patient,))
    rows: list[dict[str, Any]] = [{"dedupe_key": "PCPEHR|NORTHCLINIC|C-1"},
                                  {"dedupe_key": "PCPEHR|NORTHCLINIC|C-1"}, {"dedupe_key": None}]
    keys = keylocks.batch_keys(rows, [ref, siu, ref])
    assert keys == sorted(set(keys))
    assert set(keys) == {keylocks.key_of(kind, text) for kind, text in (
        ("message", "PCPEHR|NORTHCLINIC|C-1"), ("key", "MFP-R-1"), ("key", "X-9"),
        ("appointment", "SCHED-A-1"),
        ("patient", "700001"))}
    assert all(-2 ** 63 <= k < 2 ** 63 for k in keys)


def test_the_keys_are_held_until_the_transaction_ends(pg_url: str) -> None:
    """Another connection cannot take a locked key until the holder commits; other keys are
    free meanwhile, and ALL is held shared (another batch takes it too, a batch of too many keys
    cannot).  A transaction of more than MAX_KEYS keys holds ALL alone, exclusive."""
    db = create_engine(pg_url)
    held, other = keylocks.message_keys(["S|F|1", "S|F|2"]), keylocks.message_keys(["S|F|3"])
    many = keylocks.message_keys(f"S|F|{n}" for n in range(keylocks.MAX_KEYS + 1))

    def free(conn: Any, key: int, shared: bool = False) -> bool:
        how = "pg_try_advisory_xact_lock_shared" if shared else "pg_try_advisory_xact_lock"
        taken = bool(conn.exec_driver_sql(f"SELECT {how}(CAST({key} AS bigint))").scalar())
        conn.rollback()
        return taken

    try:
        with db.connect() as holder, db.connect() as probe:
            with holder.begin():
                keylocks.lock(holder, held)
                assert [free(probe, k) for k in held + other] == [False, False, True]
                assert [free(probe, keylocks.ALL, shared) for shared in (True, False)] == [
                    True, False]
            assert [free(probe, k) for k in [*held, keylocks.ALL]] == [True, True, True]
            with holder.begin():
                keylocks.lock(holder, many)
                assert [free(probe, many[0]), free(probe, keylocks.ALL, shared=True)] == [
                    True, False]
    finally:
        db.dispose()


def _short_lock_wait(db: Any) -> None:
    """The pipeline's connections give up on a lock after 100 ms (lock_timeout: StoreLocked)."""

    @event.listens_for(db, "connect")
    def _wait(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("SET lock_timeout = '100ms'")
        dbapi_connection.commit()

    db.dispose()  # the pooled connections had no limit


def _hold(url: str, raw: bytes, row: bool = False) -> tuple[Any, Any]:
    """Another writer holding the lock of `raw`'s dedupe key, or (`row`) the stored referral's
    row: (its engine, its connection)."""
    msh = parse(raw)
    other = create_engine(url)
    holder = other.connect()
    holder.begin()
    if row:
        holder.exec_driver_sql("SELECT id FROM referrals FOR UPDATE").all()
    else:
        keylocks.lock(holder, keylocks.message_keys([f"{msh['MSH.3']}|{msh['MSH.4']}|"
                                                     f"{msh['MSH.10']}"]))
    return other, holder


@pytest.mark.parametrize("row", [False, True], ids=["dedupe-key", "referral-row"])
def test_a_batch_that_fails_on_a_lock_is_run_again_before_it_is_answered(
        pg_url: str, row: bool) -> None:
    """The first try gives up on another writer's lock (before anything is stored, or, on the
    referral's row, after the message row was inserted); the batch is rolled back, run again
    from what was prepared once the lock is free, and answered AA once: stored once, no AR 206."""
    pipeline, db = _pg_pipeline(pg_url)
    if row:  # the referral the update changes
        pipeline.process_batch([_job(sample_payload("ref_i12_v251.hl7"))])
    raw = sample_payload("ref_i13_v251.hl7" if row else "ref_i12_v251.hl7")
    other, holder = _hold(pg_url, raw, row)
    tries = pipeline._store_batch.batches  # noqa: SLF001
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.extend(pipeline.process_batch([_job(raw)])))
    try:
        worker.start()
        deadline = time.monotonic() + 30
        while pipeline._store_batch.batches <= tries and time.monotonic() < deadline:  # noqa: SLF001
            time.sleep(0.001)  # the first try has given up
        holder.rollback()
        worker.join(30)
    finally:
        holder.close()
        other.dispose()
        pipeline.close()
    assert [parse(a)["MSA.1"] for a in results[0].acks] == ["AA"]
    assert pipeline._store_batch.batches >= tries + 2  # noqa: SLF001
    assert query(pg_url, "SELECT control_id, retransmissions, control_id_reused, status "
                         "FROM messages ORDER BY id")[-1] == (control_id(raw), 0, False,
                                                               "accepted")
    assert len(query(pg_url, "SELECT id FROM messages")) == 1 + row
    assert query(pg_url, "SELECT key_id, priority FROM referrals") == [
        ("MFP-R-1001", "A" if row else "R")]
    db.dispose()


def test_a_batch_still_locked_after_its_retries_is_ar_206_and_not_stored(pg_url: str) -> None:
    pipeline, db = _pg_pipeline(pg_url)
    raw = sample_payload("ref_i12_v251.hl7")
    other, holder = _hold(pg_url, raw)
    try:
        results = pipeline.process_batch([_job(raw)])
    finally:
        holder.rollback()
        holder.close()
        other.dispose()
        pipeline.close()
    assert [(parse(a)["MSA.1"], parse(a)["ERR.3.1"]) for a in results[0].acks] == [("AR", "206")]
    assert pipeline._store_batch.batches == 1 + LOCK_RETRIES  # noqa: SLF001
    assert query(pg_url, "SELECT count(*) FROM messages") == [(0,)]
    db.dispose()


PIPELINE_CHANNEL = parse_config({"channels": [{
    "name": "referrals", "listen": {"port": 0}, "accept": ["REF^I12-I15", "SIU^S12-S26"],
    "ack": {"application": "REFTRACK", "facility": "HUB"}}]}).channels[0]


def _job(raw: bytes) -> Job:
    return Job(PIPELINE_CHANNEL, raw, "127.0.0.1:1", datetime.now(UTC))


def _pg_pipeline(url: str) -> tuple[Pipeline, Any]:
    db = open_database(url)
    _short_lock_wait(db)
    return Pipeline(db, {"referrals": AckBuilder("REFTRACK", "HUB")}), db
