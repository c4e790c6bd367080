"""The engine's write lock: one write transaction at a time, across threads and processes.

With several ingest processes (`workers:`) each batch reads before it writes (duplicate keys,
the ledger's 204/205 checks and matching), so two batches must not interleave: the second must
see what the first committed.  PostgreSQL: a transaction-level advisory lock, released by the
commit (only needed with several ingest processes).  SQLite: an exclusive `flock` on
`<database>.lock`, taken before the transaction's first statement and released after its
commit, always, by the ingest writer and the delivery workers alike: SQLite allows one writer
anyway, and a waiter on the `flock` is woken the moment it is free, where SQLite's own busy
handler sleeps 1, 2, 5, 10 ms and more between tries (delivery under ingest load spent half its
time there).  Each `WriteLock` opens the file itself, so two of them exclude each other even
inside one process.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy import Connection, Engine

ADVISORY_KEY = 0x484C37  # "HL7": the PostgreSQL advisory lock id of ingest batches


class WriteLock:
    """`acquire(conn)` right after `conn.begin()`, `release()` after the commit or rollback.
    `processes`: several ingest processes write (PostgreSQL then needs the lock too)."""

    def __init__(self, db: Engine, processes: bool = False) -> None:
        self._fd = -1
        self._postgres = processes and db.dialect.name == "postgresql"
        if db.dialect.name == "sqlite" and db.url.database not in (None, "", ":memory:"):
            path = Path(str(db.url.database)).with_name(Path(str(db.url.database)).name + ".lock")
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self, conn: Connection) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        elif self._postgres:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ADVISORY_KEY})")

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
