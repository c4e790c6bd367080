"""The ingest write lock: with several ingest processes (`workers:`), one batch transaction at a
time across all of them.

Each batch reads before it writes (duplicate keys, the ledger's 204/205 checks and matching), so
two processes must not interleave their batches: the second must see what the first committed.
SQLite: an exclusive `flock` on `<database>.lock`, taken before the transaction's first
statement and released after its commit (the kernel wakes the next holder at once; SQLite's own
busy handler would sleep in steps of milliseconds).  PostgreSQL: a transaction-level advisory
lock, released by the commit.  With one process the lock is a no-op.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy import Connection, Engine

ADVISORY_KEY = 0x484C37  # "HL7": the PostgreSQL advisory lock id of ingest batches


class WriteLock:
    """`acquire(conn)` right after `conn.begin()`, `release()` after the commit or rollback."""

    def __init__(self, db: Engine, shared: bool) -> None:
        self._fd = -1
        self._postgres = shared and db.dialect.name == "postgresql"
        if shared and db.dialect.name == "sqlite" and db.url.database not in (None, "", ":memory:"):
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
