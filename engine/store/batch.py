"""The batch transaction of the writer thread: its kept connection, its locks, and what a
failure means (another writer's lock, or the store itself).

`BatchStore.commit_batch(work, keys)` runs `work(conn)` in one transaction and commits it, with
the write lock held (SQLite) or, on PostgreSQL, the advisory locks of the batch's keys
(engine.store.keylocks) taken first, before anything is read.  A database failure becomes
`StoreLocked` (another writer held a lock past its wait, or a deadlock: the batch may be run
again) or `StoreFailed` (anything else the database raised), and
the connection is dropped so the next batch starts on a fresh one.  Any other exception from
`work` is the caller's: the transaction is rolled back and the exception passes through
unchanged, so a bug in one message's processing can be told apart from the store failing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from engine.store import keylocks
from engine.store.lock import WriteLock

T = TypeVar("T")
log = structlog.get_logger("engine.store")

# PostgreSQL SQLSTATEs of a lock that was not had: lock_not_available (lock_timeout),
# deadlock_detected, serialization_failure.
_LOCK_STATES = frozenset({"55P03", "40P01", "40001"})


class StoreFailed(Exception):
    """The batch could not be committed; nothing of it is stored.  `error` names the driver's
    exception type (no message text: it may quote a value)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class StoreLocked(StoreFailed):
    """The batch failed on another writer's lock (SQLite busy past its wait, a PostgreSQL lock
    timeout, deadlock or serialisation failure): the same batch may succeed later."""


class BatchStore:
    """One connection kept between batches, on the writer thread only."""

    def __init__(self, db: Engine, lock: WriteLock | None = None) -> None:
        self._db = db
        self._lock = lock  # several ingest processes: one batch transaction at a time
        self._conn: Connection | None = None
        # Where batch time goes, for the log when the writer stops (`store.batch_time`).
        self.batches, self.batch_s, self.lock_wait_s = 0, 0.0, 0.0

    def commit_batch(self, work: Callable[[Connection], T], keys: Sequence[int] = ()) -> T:
        """`work(conn)` in one committed transaction, after the advisory locks of `keys`
        (PostgreSQL; engine.store.keylocks.batch_keys); raises StoreLocked or StoreFailed when
        the database fails, and whatever else `work` raises after rolling back."""
        try:
            if self._conn is None:
                self._conn = self._db.connect()
            conn = self._conn
            started = time.perf_counter()
            try:
                with conn.begin():
                    if self._lock is not None:
                        self._lock.acquire(conn)
                    keylocks.lock(conn, keys)
                    self.lock_wait_s += time.perf_counter() - started
                    return work(conn)
            finally:
                if self._lock is not None:
                    self._lock.release()
                self.batches += 1
                self.batch_s += time.perf_counter() - started
        except Exception as exc:
            if not self.is_database_error(exc):
                raise
            self._drop_connection()
            failure = StoreLocked if _locked(exc) else StoreFailed
            raise failure(type(exc).__name__) from exc

    def is_database_error(self, exc: BaseException) -> bool:
        """Raised by SQLAlchemy or the driver (not by the caller's own code)."""
        dbapi = self._db.dialect.dbapi
        return isinstance(exc, SQLAlchemyError) or (dbapi is not None
                                                      and isinstance(exc, dbapi.Error))

    def _drop_connection(self) -> None:
        """After a failure, start the next batch on a fresh connection."""
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except SQLAlchemyError:
                pass
            self._conn = None

    def close(self) -> None:
        """Release the connection and the lock file (on the writer thread, when it stops), and
        log where batch time went: waiting for the write lock or the keys' locks (another
        process's or engine's batch) or working and committing.  Only an engine's writer logs
        it: the one holding a write lock (a pipeline built without one, by a tool or a test,
        keeps quiet)."""
        if self._lock is not None and self.batches:
            log.info("store.batch_time", batches=self.batches, batch_s=round(self.batch_s, 3),
                     lock_wait_s=round(self.lock_wait_s, 3),
                     lock_wait_share=round(self.lock_wait_s / self.batch_s, 4)
                     if self.batch_s else 0.0)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock is not None:
            self._lock.close()


def _locked(exc: BaseException) -> bool:
    """Did the batch fail on another writer's lock (retry later), not on the store itself?"""
    cause = getattr(exc, "orig", None) or exc
    if isinstance(cause, sqlite3.OperationalError):
        text = str(cause)
        return "database is locked" in text or "database is busy" in text
    return getattr(cause, "sqlstate", None) in _LOCK_STATES
