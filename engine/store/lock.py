"""The engine's write lock on SQLite: one write transaction at a time, across threads and processes.

With several ingest processes (`workers:`), or several engines on one database (docs/operations.md's
scale-out), each batch reads before it writes (duplicate keys, the ledger's 204/205 checks and
matching), so two batches must not interleave: the second must see what the first committed.
SQLite: an exclusive `flock` on `<database>.lock`, taken before the transaction's first
statement and released after its commit, always, by the ingest writer and the delivery workers
alike: SQLite allows one writer anyway, and a waiter on the `flock` is woken the moment it is
free, where SQLite's own busy handler sleeps 1, 2, 5, 10 ms and more between tries (delivery
under ingest load spent half its time there).  Each `WriteLock` opens the file itself, so two
of them exclude each other even inside one process.  PostgreSQL takes no lock for the whole
batch: each batch locks the keys it touches (engine.store.keylocks), so engines on one
database write side by side.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import zlib
from pathlib import Path

from sqlalchemy import Connection, Engine


class WriteLock:
    """`acquire(conn)` right after `conn.begin()`, `release()` after the commit or rollback;
    nothing on PostgreSQL or an in-memory SQLite database."""

    def __init__(self, db: Engine) -> None:
        self._fd = -1
        if db.dialect.name == "sqlite" and db.url.database not in (None, "", ":memory:"):
            path = Path(str(db.url.database)).with_name(Path(str(db.url.database)).name + ".lock")
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self, _conn: Connection) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


DELIVERY_KEY = 0x484C38  # the PostgreSQL advisory lock class of destination leases


class DestinationLease:
    """Which engine delivers a destination: one at a time among every engine sharing the
    database, so no two send the same queue (order would break, messages would go twice).

    The lease is held for as long as its holder runs and goes with it when it dies, so another
    engine takes the destination over at its next pass.  SQLite: an exclusive, non-blocking
    `flock` on `<database>.delivery-<hash of the name>.lock`, kept by the process.  PostgreSQL:
    a session advisory lock (class DELIVERY_KEY, the name's CRC-32) on the worker's own kept
    connection, which `release` unlocks before that connection goes back to the pool.  An
    in-memory SQLite database has a single engine: always held."""

    def __init__(self, db: Engine, destination: str) -> None:
        self.held = False
        self._fd = -1
        self._path: Path | None = None
        self._postgres = db.dialect.name == "postgresql"
        self._key = zlib.crc32(destination.encode("utf-8")) - 2 ** 31  # a signed int4
        if db.dialect.name == "sqlite" and db.url.database not in (None, "", ":memory:"):
            digest = hashlib.sha256(destination.encode("utf-8")).hexdigest()[:16]
            base = Path(str(db.url.database))
            self._path = base.with_name(f"{base.name}.delivery-{digest}.lock")

    def hold(self, conn: Connection) -> bool:
        """Take the lease if it is free (or confirm it is ours); False: another engine has it."""
        if self.held:
            return True
        if self._path is not None:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._fd, self.held = fd, True
        elif self._postgres:
            self.held = bool(conn.exec_driver_sql(
                f"SELECT pg_try_advisory_lock({DELIVERY_KEY}, {self._key})").scalar())
            conn.commit()
        else:
            self.held = True
        return self.held

    def release(self, conn: Connection | None) -> None:
        """Give the lease up: before the worker's connection is closed (PostgreSQL), or when the
        engine stops."""
        if not self.held:
            return
        self.held = False
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        elif self._postgres and conn is not None:
            with contextlib.suppress(Exception):  # a broken connection holds nothing any more
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({DELIVERY_KEY}, {self._key})")
                conn.commit()
