"""Retention of message bodies (`engine.store.retention`, `hl7-engine purge`, the daily purge of
`run`): old bodies and finished outbound payloads are emptied, everything else is kept, space
comes back, and the readers cope.  On real SQLite files and PostgreSQL, through the real CLI and
a real engine over TCP."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from delivering import driven
from enginectl import (
    ROOT,
    Engine,
    numbered_referral,
    run_cli,
    sample_payload,
    stored_messages,
    write_config,
)
from sqlalchemy import Engine as Database
from sqlalchemy import Table, select, update

from engine.ack import AckBuilder
from engine.config import Channel, Config, load_config, parse_config
from engine.mllp.blocking import MLLPClient
from engine.outbound import operator
from engine.parsing import parse
from engine.pipeline import Job, Pipeline
from engine.store.database import open_database
from engine.store.retention import PurgeReport, purge, returns_space, vacuum
from engine.store.schema import deliveries, messages, outbound, referral_events, referrals

NOW = datetime(2026, 11, 28, 7, 0)  # naive UTC, as stored
OLD = NOW - timedelta(days=100)
RECENT = NOW - timedelta(days=10)
CHANNEL = {"name": "referrals", "listen": {"port": 0},
           "accept": ["REF^I12-I15", "SIU^S12-S26", "ADT^A01"]}


def _ref(key: str) -> bytes:
    """ref_i12_v251 as a referral of its own (RF1-6 and MSH-10 from `key`)."""
    raw = sample_payload("ref_i12_v251.hl7").replace(b"MFP-R-1001", key.encode())
    return raw.replace(b"REF-I12-V251", f"C-{key}".encode())


def _ingest(db: Database, channel: Channel, payloads: list[tuple[bytes, datetime]],
            config: Config | None = None) -> list[int]:
    """Store messages through the real pipeline (routes too, when `config` has them), each
    received at its own time; their ids."""
    pipeline = Pipeline(db, {channel.name: AckBuilder()}, config,
                        clock=lambda: NOW.replace(tzinfo=UTC))
    results = pipeline.process_batch([Job(channel, raw, "127.0.0.1", at.replace(tzinfo=UTC))
                                      for raw, at in payloads])
    pipeline.close()
    return [int(r.message_id or 0) for r in results]


def _dump(db: Database, table: Table) -> list[dict[str, Any]]:
    with db.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).order_by(table.c.id)).mappings()]


def _without(rows: list[dict[str, Any]], *columns: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in columns} for r in rows]


# --- the purge itself ---------------------------------------------------------------------------


def test_old_bodies_are_purged_recent_kept_and_history_intact(db_url: str) -> None:
    """Bodies received before the cut-off become empty with `purged_at`; a recent one is kept;
    every other column of every message, and the ledger's history rows that name them, are
    unchanged; a second purge finds nothing."""
    db = open_database(db_url)
    channel = parse_config({"channels": [CHANNEL]}).channels[0]
    _ingest(db, channel, [(_ref("R-OLD-1"), OLD), (_ref("R-OLD-2"), OLD), (_ref("R-NEW"), RECENT)])
    before = {t.name: _dump(db, t) for t in (messages, referral_events, referrals)}
    report = purge(db, NOW, 90)
    after = {t.name: _dump(db, t) for t in (messages, referral_events, referrals)}
    old_bytes = sum(len(m["raw"]) for m in before["messages"][:2])
    assert report == PurgeReport(messages=2, outbound=0, bytes=old_bytes)
    assert [(m["raw"], m["purged_at"]) for m in after["messages"]] == [
        (b"", NOW), (b"", NOW), (before["messages"][2]["raw"], None)]
    assert _without(after["messages"], "raw", "purged_at") == _without(
        before["messages"], "raw", "purged_at")
    assert all(m["ledger_effect"] and m["digest"] for m in after["messages"])
    assert len(after["referral_events"]) == 3
    assert {e["message_id"] for e in after["referral_events"]} == {1, 2, 3}
    assert after["referral_events"] == before["referral_events"]
    assert after["referrals"] == before["referrals"]
    assert purge(db, NOW, 90) == PurgeReport()
    db.dispose()


def _routed_config(tmp_path: Path) -> Config:
    """Three file destinations fed by one route: `archive` delivers, `broken` cannot (its
    directory sits under a file; one attempt makes a dead letter), `held` is never run."""
    (tmp_path / "occupied").write_text("a file where a directory should be")
    return parse_config({
        "channels": [CHANNEL],
        "destinations": [
            {"name": "archive", "type": "file", "directory": str(tmp_path / "archive")},
            {"name": "broken", "type": "file", "max_attempts": 1,
             "directory": str(tmp_path / "occupied" / "out")},
            {"name": "held", "type": "file", "directory": str(tmp_path / "held")}],
        "routes": [{"name": "copy", "from": "referrals", "to": ["archive", "broken", "held"]}]})


def _deliver(db: Database, config: Config, name: str) -> None:
    dest = next(d for d in config.destinations if d.name == name)
    from twisted.internet import reactor

    worker = driven(dest, db, lambda: NOW, reactor)
    worker.run_pass()
    worker.close()


@pytest.mark.usefixtures("reactor")
def test_only_finished_outbound_payloads_are_purged(tmp_path: Path, db_url: str) -> None:
    """Old outbound rows lose their payload once delivered or dead; queued rows never do, and
    are delivered afterwards with their bytes; the attempts stay; a purged dead letter is not
    released into the queue again."""
    config = _routed_config(tmp_path)
    db = open_database(db_url)
    sent = [_ref("R-A"), _ref("R-B")]
    _ingest(db, config.channels[0], [(raw, OLD) for raw in sent], config)
    _deliver(db, config, "archive")
    _deliver(db, config, "broken")
    with db.begin() as conn:
        conn.execute(update(outbound).values(created_at=OLD))
    attempts = _dump(db, deliveries)
    queue = {(r["destination"], r["status"]) for r in _dump(db, outbound)}
    assert queue == {("archive", "delivered"), ("broken", "dead"), ("held", "queued")}

    report = purge(db, NOW, 90)
    rows = _dump(db, outbound)
    assert (report.messages, report.outbound) == (2, 4)
    assert report.bytes == 3 * sum(len(raw) for raw in sent)  # the messages, 4 copies
    assert sorted((r["destination"], r["status"], r["payload"], r["purged_at"]) for r in rows) == [
        ("archive", "delivered", b"", NOW), ("archive", "delivered", b"", NOW),
        ("broken", "dead", b"", NOW), ("broken", "dead", b"", NOW),
        ("held", "queued", sent[0], None), ("held", "queued", sent[1], None)]
    assert _dump(db, deliveries) == attempts and len(attempts) == 4
    with db.begin() as conn:
        assert operator.release(conn, "broken") == 0
    _deliver(db, config, "held")
    assert [f.read_bytes() for f in sorted((tmp_path / "held").glob("*.hl7"))] == sent
    db.dispose()


@pytest.mark.usefixtures("reactor")
def test_dry_run_changes_nothing_and_counts_what_purge_does(tmp_path: Path,
                                                            sqlite_url: str) -> None:
    """`dry_run` reports exactly what the real purge then empties, and writes nothing."""
    config = _routed_config(tmp_path)
    db = open_database(sqlite_url)
    _ingest(db, config.channels[0], [(_ref("R-1"), OLD), (_ref("R-2"), OLD),
                                     (_ref("R-3"), RECENT)], config)
    _deliver(db, config, "archive")
    with db.begin() as conn:
        conn.execute(update(outbound).where(outbound.c.message_id < 3).values(created_at=OLD))
    before = [_dump(db, t) for t in (messages, outbound)]
    dry = purge(db, NOW, 90, dry_run=True)
    assert [_dump(db, t) for t in (messages, outbound)] == before
    real = purge(db, NOW, 90)
    assert (real.messages, real.outbound) == (2, 2)  # the old copies delivered to archive
    assert dry == dataclasses.replace(real, dry_run=True)
    db.dispose()


def test_purge_works_in_chunks_oldest_first(sqlite_url: str) -> None:
    """Chunks of 2 rows purge 5 old messages in full; the report adds them up."""
    db = open_database(sqlite_url)
    channel = parse_config({"channels": [CHANNEL]}).channels[0]
    _ingest(db, channel, [(_ref(f"R-{n}"), OLD + timedelta(minutes=n)) for n in range(5)])
    report = purge(db, NOW, 90, chunk=2)
    assert report.messages == 5
    assert [m["raw"] for m in _dump(db, messages)] == [b""] * 5
    db.dispose()


# --- space on SQLite ----------------------------------------------------------------------------


def _padded(n: int) -> bytes:
    """A synthetic ADT^A01 of about 2 KB (an NTE of hex digits)."""
    return (f"MSH|^~\\&|SYNTH|LAB|HUB|HUB|20261128070000||ADT^A01|PAD-{n:05d}|P|2.5.1\r"
            f"EVN|A01|20261128070000\rNTE|1||{os.urandom(950).hex()}\r").encode()


def _fill(db: Database, count: int, at: datetime) -> int:
    """`count` padded messages received at `at`, in batches; their bytes."""
    channel = parse_config({"channels": [CHANNEL]}).channels[0]
    size = 0
    for start in range(0, count, 500):
        batch = [_padded(n) for n in range(start, min(count, start + 500))]
        _ingest(db, channel, [(raw, at) for raw in batch])
        size += sum(len(raw) for raw in batch)
    return size


def _file_size(url: str) -> int:
    path = Path(url.removeprefix("sqlite:///"))
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal"))
               if p.exists())


def test_a_new_sqlite_file_shrinks_after_a_purge(sqlite_url: str) -> None:
    """A file the engine creates has incremental auto_vacuum; purging 2,000 bodies of 2 KB
    makes the file smaller by at least half their bytes."""
    db = open_database(sqlite_url)
    assert returns_space(db)
    raw_bytes = _fill(db, 2000, OLD)
    db.dispose()  # the last connection checkpoints the WAL into the file
    full = _file_size(sqlite_url)
    db = open_database(sqlite_url)
    report = purge(db, NOW, 90)
    db.dispose()
    assert (report.messages, report.bytes) == (2000, raw_bytes)
    assert full - _file_size(sqlite_url) >= raw_bytes / 2


def test_an_older_sqlite_file_keeps_the_space_until_purge_vacuum(tmp_path: Path) -> None:
    """A file made without auto_vacuum (as before retention) does not shrink on a purge;
    `purge --vacuum` rebuilds it (saying so) and switches it to incremental auto_vacuum."""
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    legacy = sqlite3.connect(path)
    legacy.execute("PRAGMA journal_mode=WAL")  # what the engine did first on a new file
    legacy.close()
    db = open_database(url)
    assert not returns_space(db)
    raw_bytes = _fill(db, 2000, datetime.now(UTC).replace(tzinfo=None) - timedelta(days=100))
    db.dispose()
    full = _file_size(url)
    out = subprocess.run([sys.executable, "-m", "engine", "purge", "--older-than", "90",
                          "--database", url, "--config", str(tmp_path / "none.yaml")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("purged 2,000 message bodies and 0 ")
    assert "purge --vacuum" in out.stdout
    assert _file_size(url) > full - raw_bytes / 2
    db = open_database(url)
    assert vacuum(db) == "rebuilt" and returns_space(db)
    db.dispose()
    assert full - _file_size(url) >= raw_bytes / 2


# --- the CLI ------------------------------------------------------------------------------------


def _events(config: Path, name: str) -> list[dict[str, Any]]:
    log = Path(load_config(str(config)).log.file)
    lines = log.read_text().splitlines() if log.exists() else []
    return [e for e in map(json.loads, lines) if e.get("event") == name]


def test_show_replay_and_tail_of_a_purged_message(tmp_path: Path, sqlite_url: str) -> None:
    """After `purge` (the config's retention): `show --raw` prints the metadata, says when the
    body was purged and exits 1 without an audit event; `show --json` has `purged_at`;
    `replay` refuses and queues nothing; a kept message still shows and replays; `tail`
    works."""
    config = write_config(tmp_path, sqlite_url, top={
        "destinations": [{"name": "archive", "type": "file", "directory": str(tmp_path / "o")}],
        "retention": {"message_bodies_days": 30}})
    db = open_database(sqlite_url)
    today = datetime.now(UTC).replace(tzinfo=None)
    _ingest(db, load_config(str(config)).channels[0], [
        (_ref("R-OLD"), today - timedelta(days=60)), (_ref("R-NEW"), today)])
    db.dispose()
    purged = run_cli("purge", config=config)
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.startswith("purged 1 message body and 0 delivered/dead outbound "
                                    "payloads (")
    assert [(e["messages"], e["outbound"]) for e in _events(config, "retention.purged")] == [
        (1, 0)]
    (at,) = [r[0] for r in stored_messages(sqlite_url, "purged_at") if r[0] is not None]

    raw = run_cli("show", "1", "--raw", config=config)
    assert raw.returncode == 1
    assert raw.stderr.strip() == (f"message 1: body purged {at.isoformat(timespec='seconds')}Z "
                                  "(retention: message_bodies_days)")
    assert "C-R-OLD" in raw.stdout and "purged_at" in raw.stdout and "PID|" not in raw.stdout
    assert _events(config, "audit.message_body_read") == []
    shown = json.loads(run_cli("show", "1", "--json", config=config).stdout)
    assert shown["purged_at"] == at.isoformat(timespec="seconds") + "Z"
    assert shown["digest"] and "raw" not in shown
    raw_json = run_cli("show", "1", "--raw", "--json", config=config)
    assert raw_json.returncode == 1 and json.loads(raw_json.stdout)["raw"] is None

    kept = run_cli("show", "2", "--raw", config=config)
    assert kept.returncode == 0 and "\nPID|" in kept.stdout and "purged_at" not in kept.stdout
    assert json.loads(run_cli("show", "2", "--json", config=config).stdout)["purged_at"] is None

    refused = run_cli("replay", "1", "--to", "archive", config=config)
    assert refused.returncode == 1
    assert "message 1: body purged" in refused.stderr and "nothing to replay" in refused.stderr
    assert _dump_url(sqlite_url, outbound) == []
    assert run_cli("replay", "2", "--to", "archive", config=config).returncode == 0
    tail = run_cli("tail", "--json", config=config)
    assert tail.returncode == 0
    assert [json.loads(line)["control_id"] for line in tail.stdout.splitlines()] == [
        "C-R-OLD", "C-R-NEW"]


def _dump_url(url: str, table: Table) -> list[dict[str, Any]]:
    db = open_database(url, migrate=False)
    rows = _dump(db, table)
    db.dispose()
    return rows


def test_purge_without_retention_says_how_to_set_it(tmp_path: Path, sqlite_url: str) -> None:
    """No `retention` and no --older-than: exit 2 and one line naming the setting; a bad
    --older-than is exit 2 too; --older-than alone works (here a dry run)."""
    config = write_config(tmp_path, sqlite_url)
    open_database(sqlite_url).dispose()
    off = run_cli("purge", config=config)
    assert off.returncode == 2 and off.stdout == ""
    assert off.stderr.splitlines() == [
        f"purge: retention is off (set `retention: {{message_bodies_days: DAYS}}` in {config}, "
        "or give --older-than DAYS)"]
    zero = run_cli("purge", "--older-than", "0", config=config)
    assert zero.returncode == 2 and zero.stderr.startswith("--older-than: expected")
    dry = run_cli("purge", "--older-than", "30", "--dry-run", config=config)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == ("would purge 0 message bodies and 0 delivered/dead outbound "
                                  "payloads (0 bytes)")


# --- the running engine -------------------------------------------------------------------------


def test_a_retransmission_of_a_purged_message_is_still_recognised(tmp_path: Path,
                                                                  db_url: str) -> None:
    """Sent, purged (while the engine runs), sent again: the digest still matches, so the
    resend is answered AA as a retransmission and not stored a second time."""
    engine = Engine(write_config(tmp_path, db_url)).start()
    try:
        payload = sample_payload("ref_i12_v251.hl7")
        with MLLPClient("127.0.0.1", engine.port) as client:
            assert parse(client.exchange(payload)[0])["MSA.1"] == "AA"
        db = open_database(db_url, migrate=False)
        later = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=1)
        assert purge(db, later, 0.5).messages == 1
        db.dispose()
        with MLLPClient("127.0.0.1", engine.port) as client:
            ack = parse(client.exchange(payload)[0])
        assert (ack["MSA.1"], ack["MSA.2"]) == ("AA", "REF-I12-V251")
        resent = engine.wait_for("message.retransmission")
    finally:
        engine.stop()
    assert [e["id"] for e in resent] == [1]
    assert stored_messages(db_url, "id", "raw", "retransmissions") == [(1, b"", 1)]


def test_run_purges_at_start_when_retention_is_set(tmp_path: Path, sqlite_url: str) -> None:
    """`run` with `retention: {message_bodies_days: 30}` purges at start: a message aged to 60
    days loses its body, a new one keeps it, and `retention.purged` says so (counts only)."""
    engine = Engine(write_config(tmp_path, sqlite_url)).start()
    try:
        with MLLPClient("127.0.0.1", engine.port) as client:
            for n in (1, 2):
                assert parse(client.exchange(numbered_referral("RET", n)[1])[0])["MSA.1"] == "AA"
    finally:
        engine.stop()
    assert engine.wait_for("retention.purged", timeout=0) == []  # retention was off
    db = open_database(sqlite_url, migrate=False)
    with db.begin() as conn:
        conn.execute(update(messages).where(messages.c.id == 1).values(
            received_at=datetime.now(UTC).replace(tzinfo=None) - timedelta(days=60)))
    db.dispose()
    engine = Engine(write_config(tmp_path, sqlite_url,
                                 top={"retention": {"message_bodies_days": 30}})).start()
    try:
        purged = engine.wait_for("retention.purged", timeout=15)
    finally:
        engine.stop()
    assert [(e["messages"], e["outbound"], e["older_than_days"]) for e in purged] == [(1, 0, 30)]
    assert set(purged[0]) == {"event", "level", "ts", "messages", "outbound", "bytes",
                              "older_than_days", "seconds"}
    rows = stored_messages(sqlite_url, "id", "raw", "purged_at")
    assert [(r[0], r[1] == b"", r[2] is not None) for r in rows] == [(1, True, True),
                                                                     (2, False, False)]


def test_purging_while_messages_arrive_loses_nothing(tmp_path: Path, db_url: str) -> None:
    """A purge loop (chunks of 20) runs while 300 messages arrive over TCP: each is answered AA
    and stored once, no commit fails, the purges raise nothing, and together they empty every
    body exactly once."""
    engine = Engine(write_config(tmp_path, db_url)).start()
    db = open_database(db_url, migrate=False)
    later = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=1)
    done = threading.Event()
    reports: list[PurgeReport] = []
    errors: list[BaseException] = []

    def purging() -> None:
        try:
            while not done.is_set():
                reports.append(purge(db, later, 0.5, chunk=20))
                time.sleep(0.01)
        except Exception as exc:  # the assertion below names it
            errors.append(exc)

    thread = threading.Thread(target=purging)
    thread.start()
    try:
        with MLLPClient("127.0.0.1", engine.port) as client:
            acks = [parse(client.exchange(numbered_referral("LOAD", n)[1])[0])["MSA.1"]
                    for n in range(300)]
    finally:
        done.set()
        thread.join(60)
        engine.stop()
    reports.append(purge(db, later, 0.5))
    db.dispose()
    assert errors == [] and acks == ["AA"] * 300
    assert [e for e in engine.events() if e.get("event") == "store.commit_failed"] == []
    assert [r[0] for r in stored_messages(db_url, "raw")] == [b""] * 300
    assert sum(r.messages for r in reports) == 300
