"""Retention of message bodies (`retention.message_bodies_days`).

`purge` empties the bytes older than the policy allows, and nothing else:

* `messages.raw` of messages received before the cut-off becomes b"" and `purged_at` is set.
  Every other column stays: digest and size (a retransmission is still recognised by its
  digest, `engine.store.messages._known`), sender, control id, status, ACK codes, ledger
  effect; and so does every history row (`referral_events`, `deliveries`, `relayed_acks`),
  which names the message by its id.
* `outbound.payload` of rows created before the cut-off, once they are final: `delivered` or
  `dead`.  A `queued` row, or one in any status not in FINAL, may still be sent and is never
  touched; `release` skips purged dead letters.
* ACKs are kept (`deliveries.ack`, `relayed_acks.ack`): an ACK is MSH, MSA and at most an ERR,
  no patient data and tens of bytes, and it is the record of what was answered.

Locking.  Each chunk (at most `chunk` rows, oldest first by id) is one short transaction that
takes its turn on the engine's write lock, as an ingest batch does and as the delivery workers
do for each attempt (`engine.store.lock.WriteLock`).  SQLite: the `flock`, so ingest waits for
the chunk in the kernel, not in SQLite's busy loop.  PostgreSQL: a chunk of messages first
takes the advisory locks of its rows' dedupe keys, as an ingest batch does
(engine.store.keylocks), so it never interleaves with a batch that counts a retransmission on
one of its rows (the count would go with the deleted row version); both take their keys
sorted, in one statement, so neither waits in a cycle.  Outbound rows need no lock: a row
released meanwhile no longer passes the delete's conditions.  A short pause between chunks lets
a waiting batch in first, so a backlog never starves ingest.

Rows are rewritten (deleted and inserted again with the same id, in one transaction), not
updated: SQLite never frees a page whose rows merely shrink, only pages a delete empties.

Space.  SQLite: freed pages go to the file's freelist.  A file the engine created has
`auto_vacuum=INCREMENTAL` (`engine.store.database`); `purge` then runs `PRAGMA
incremental_vacuum` in steps, each under the write lock, and asks for a WAL checkpoint, after
which the file is smaller.  An older file keeps the pages for new rows until `vacuum`
(`hl7-engine purge --vacuum`) switches it over, once.  PostgreSQL: the old row versions and
their TOAST chunks become dead tuples that (auto)vacuum makes reusable for new rows; the files
do not shrink (that takes VACUUM FULL, which locks the tables) and nothing needs to be run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    Table,
    delete,
    func,
    insert,
    select,
)

from engine.logs import emit
from engine.outbound.status import FINAL as OUTBOUND_FINAL
from engine.store import keylocks
from engine.store.lock import WriteLock
from engine.store.schema import messages, outbound

CHUNK = 500  # rows per transaction
PAUSE_S = 0.005  # between two transactions: a waiting ingest batch takes the lock first
VACUUM_PAGES = 2048  # SQLite pages given back per step (8 MB at 4 KiB a page)
FINAL = tuple(s.value for s in OUTBOUND_FINAL)  # outbound statuses no worker sends again
INCREMENTAL = 2  # PRAGMA auto_vacuum


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What a purge emptied (a dry run: would empty)."""

    messages: int = 0  # message bodies
    outbound: int = 0  # delivered or dead outbound payloads
    bytes: int = 0  # their size
    dry_run: bool = False
    stopped: bool = False  # `stopping` said so before the end: the next purge goes on


@dataclass(frozen=True, slots=True)
class _Bodies:
    """A table whose `body` column retention empties."""

    table: Table
    body: str
    at: str  # the time compared with the cut-off
    final_only: bool  # only rows in a FINAL status


_MESSAGES = _Bodies(messages, "raw", "received_at", False)
_OUTBOUND = _Bodies(outbound, "payload", "created_at", True)


def purge(db: Engine, now: datetime, older_than_days: float, *, dry_run: bool = False,
          chunk: int = CHUNK, stopping: Callable[[], bool] = lambda: False) -> PurgeReport:
    """Empty the message bodies received, and the finished outbound payloads queued, before
    `now - older_than_days`, in transactions of at most `chunk` rows; then give SQLite's freed
    pages back.  Logs `retention.purged`, or `retention.purge_failed` (the exception's type)
    and raises.  `dry_run` only counts.  `stopping` is asked before each chunk (the engine is
    shutting down): what is done stays done."""
    cutoff = now - timedelta(days=older_than_days)
    if dry_run:
        return _count(db, cutoff)
    started = time.monotonic()
    try:
        report = _purge(db, now, cutoff, chunk, stopping)
    except Exception as exc:
        emit("error", "retention.purge_failed", {"error": type(exc).__name__})
        raise
    fields: dict[str, Any] = {
        "messages": report.messages, "outbound": report.outbound, "bytes": report.bytes,
        "older_than_days": older_than_days, "seconds": round(time.monotonic() - started, 3)}
    if report.stopped:
        fields["stopped"] = True
    emit("info", "retention.purged", fields)
    return report


def _purge(db: Engine, now: datetime, cutoff: datetime, chunk: int,
           stopping: Callable[[], bool]) -> PurgeReport:
    lock = WriteLock(db)
    try:
        with db.connect() as conn:
            found = [_purge_table(conn, lock, bodies, cutoff, now, chunk, stopping)
                     for bodies in (_MESSAGES, _OUTBOUND)]
        _reclaim(db, lock)
    finally:
        lock.close()
    (n_messages, b_messages), (n_outbound, b_outbound) = found
    return PurgeReport(n_messages, n_outbound, b_messages + b_outbound, stopped=stopping())


def _purge_table(conn: Connection, lock: WriteLock, bodies: _Bodies, cutoff: datetime,
                 now: datetime, chunk: int, stopping: Callable[[], bool]) -> tuple[int, int]:
    """Chunk after chunk until none is left: (rows emptied, their bytes).  Each chunk starts
    past the last one's ids, so the loop ends."""
    rows = size = after = 0
    while not stopping():
        try:
            with conn.begin():
                lock.acquire(conn)
                _lock_messages(conn, bodies, after, cutoff, chunk)
                done = _rewrite(conn, bodies, after, cutoff, now, chunk)
        finally:
            lock.release()
        if not done:
            break
        rows += len(done)
        size += sum(nbytes for _, nbytes in done)
        after = max(row_id for row_id, _ in done)
        time.sleep(PAUSE_S)
    return rows, size


def _pending(bodies: _Bodies) -> list[ColumnElement[bool]]:
    """Rows whose body may be emptied: not yet purged, and final when that is asked."""
    t = bodies.table
    where: list[ColumnElement[bool]] = [t.c.purged_at.is_(None)]
    if bodies.final_only:
        where.append(t.c.status.in_(FINAL))
    return where


def _pick(bodies: _Bodies, after: int, cutoff: datetime, limit: int) -> Select[Any]:
    """The ids of the next `limit` rows to empty past id `after`."""
    t = bodies.table
    return (select(t.c.id).where(t.c.id > after, t.c[bodies.at] < cutoff, *_pending(bodies))
            .order_by(t.c.id).limit(limit))


def _lock_messages(conn: Connection, bodies: _Bodies, after: int, cutoff: datetime,
                   limit: int) -> None:
    """PostgreSQL, messages: the advisory locks of the dedupe keys of the rows the chunk
    rewrites (see the module's text)."""
    if bodies is not _MESSAGES or conn.dialect.name != "postgresql":
        return
    pick = _pick(bodies, after, cutoff, limit).subquery()
    found = conn.execute(select(messages.c.dedupe_key).where(messages.c.id.in_(select(pick.c.id))))
    keylocks.lock(conn, keylocks.message_keys(str(k) for (k,) in found if k))


def _rewrite(conn: Connection, bodies: _Bodies, after: int, cutoff: datetime, now: datetime,
             limit: int) -> list[tuple[int, int]]:
    """Inside the caller's transaction: delete the next `limit` rows past id `after` and insert
    them again, same id and columns, with an empty body; (id, bytes emptied) of each.  The
    delete repeats the conditions, so a row changed meanwhile (a dead letter released) is
    left alone, and it returns the rows as it removed them."""
    t = bodies.table
    body = t.c[bodies.body]
    pending = _pending(bodies)
    pick = _pick(bodies, after, cutoff, limit)
    kept = [c for c in t.c if c.name != bodies.body]
    removed = conn.execute(delete(t).where(t.c.id.in_(pick), *pending)
                           .returning(*kept, func.length(body).label("_bytes"))).mappings().all()
    if not removed:
        return []
    rows: list[dict[str, Any]] = sorted((dict(r) for r in removed), key=lambda r: int(r["id"]))
    sizes = [(int(r["id"]), int(r.pop("_bytes") or 0)) for r in rows]
    conn.execute(insert(t), [{**r, bodies.body: b"", "purged_at": now} for r in rows])
    return sizes


def _count(db: Engine, cutoff: datetime) -> PurgeReport:
    """A dry run: what `purge` would empty now, in one read of each table."""
    found = []
    with db.connect() as conn:
        for bodies in (_MESSAGES, _OUTBOUND):
            t = bodies.table
            found.append(conn.execute(
                select(func.count(), func.coalesce(func.sum(func.length(t.c[bodies.body])), 0))
                .where(t.c[bodies.at] < cutoff, *_pending(bodies))).one())
    (n_messages, b_messages), (n_outbound, b_outbound) = found
    return PurgeReport(int(n_messages), int(n_outbound), int(b_messages) + int(b_outbound),
                       dry_run=True)


def _pragma(raw: Any, name: str) -> int:
    return int(raw.execute(f"PRAGMA {name}").fetchone()[0])


def returns_space(db: Engine) -> bool:
    """Does a purge shrink the database file (SQLite with incremental auto_vacuum)?"""
    if db.dialect.name != "sqlite":
        return False
    with db.connect() as conn:
        return _pragma(conn.connection.driver_connection, "auto_vacuum") == INCREMENTAL


def _reclaim(db: Engine, lock: WriteLock) -> None:
    """SQLite with incremental auto_vacuum: give the freelist back to the file system,
    VACUUM_PAGES at a time, each step under the write lock; then ask for a passive WAL
    checkpoint (the file shrinks when the WAL is copied back; it never waits).  Nothing
    elsewhere."""
    if db.dialect.name != "sqlite":
        return
    with db.connect() as conn:
        raw: Any = conn.connection.driver_connection
        if _pragma(raw, "auto_vacuum") != INCREMENTAL:
            return
        free = _pragma(raw, "freelist_count")
        while free:
            lock.acquire(conn)
            try:
                # executescript steps the pragma to its end (execute() frees a single page)
                raw.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES})")
            finally:
                lock.release()
            left = _pragma(raw, "freelist_count")
            if left >= free:  # no progress (pages freed meanwhile): the next purge goes on
                break
            free = left
            time.sleep(PAUSE_S)
        raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def vacuum(db: Engine) -> str:
    """`purge --vacuum`.  A SQLite file without incremental auto_vacuum is switched over and
    rebuilt (`VACUUM`: every write waits until it is done, seconds per GB) and its WAL
    truncated: "rebuilt".  A file that has it gives its free pages back: "incremental".
    PostgreSQL: nothing to run, (auto)vacuum reuses the space: "postgresql"."""
    if db.dialect.name != "sqlite":
        return "postgresql"
    lock = WriteLock(db)
    try:
        with db.connect() as conn:
            raw: Any = conn.connection.driver_connection
            if _pragma(raw, "auto_vacuum") == INCREMENTAL:
                _reclaim(db, lock)
                return "incremental"
            lock.acquire(conn)
            try:
                raw.executescript("PRAGMA auto_vacuum=INCREMENTAL; VACUUM;")
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                lock.release()
        return "rebuilt"
    finally:
        lock.close()
