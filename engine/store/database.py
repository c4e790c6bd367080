"""Opening the database: URL (and the SQLite file it names), SQLite pragmas (WAL, synchronous,
incremental auto_vacuum on a new file), file mode 0600, migrations; what a database error is."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from engine.store.sql import use_sqlite_text_datetimes

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def open_database(url: str, synchronous: str = "FULL", migrate: bool = True) -> Engine:
    """An Engine for `url`.  SQLite files are created 0600 with WAL and the given synchronous
    level; PostgreSQL needs `postgresql+psycopg://`.  With `migrate`, the schema is upgraded to
    the newest revision first."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql" or parsed.drivername == "postgres":
        parsed = parsed.set(drivername="postgresql+psycopg")
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        use_sqlite_text_datetimes()
        _prepare_sqlite_file(parsed.database)
        kwargs["connect_args"] = {"timeout": 30}
    # Exception text must never carry message bytes.
    engine = create_engine(parsed, hide_parameters=True, **kwargs)
    if engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine, synchronous)
    if migrate:
        upgrade(engine)
    return engine


def sqlite_file(url: str) -> Path | None:
    """The SQLite file `url` names (absolute), or None: another database, or in memory."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).absolute()


def is_database_error(exc: BaseException) -> bool:
    """Raised by SQLAlchemy: the database cannot be reached, the URL is wrong, a statement
    failed."""
    return isinstance(exc, SQLAlchemyError)


def _prepare_sqlite_file(database: str | None) -> None:
    if not database or database == ":memory:":
        return
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _sqlite_pragmas(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # A new, empty file gets incremental auto_vacuum, so purged bodies can go back to the
        # file system (engine.store.retention).  It must come before anything is written, WAL
        # mode's header included; an existing file needs a VACUUM (`purge --vacuum`).
        if cursor.execute("PRAGMA page_count").fetchone()[0] == 0:
            cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def write_state(db: Engine, busy_timeout_ms: int = 1000) -> str:
    """`ok` when the database would take a write now, else a short reason (`locked`,
    `read-only`, `error: <type>`).  SQLite: `BEGIN IMMEDIATE; ROLLBACK` (the write lock, waited
    for at most `busy_timeout_ms`, then nothing written); PostgreSQL: a round trip, and neither
    a read-only transaction nor a standby in recovery."""
    dbapi_error = getattr(db.dialect.loaded_dbapi, "Error", SQLAlchemyError)
    try:
        if db.dialect.name == "sqlite":
            _sqlite_write_lock(db, busy_timeout_ms)
            return "ok"
        with db.connect() as conn:
            read_only = conn.exec_driver_sql("SHOW transaction_read_only").scalar()
            recovery = conn.exec_driver_sql("SELECT pg_is_in_recovery()").scalar()
        return "read-only" if read_only == "on" or recovery else "ok"
    except (SQLAlchemyError, dbapi_error) as exc:
        text = str(getattr(exc, "orig", None) or exc).lower()
        return ("locked" if "locked" in text else "read-only" if "readonly" in text
                or "read-only" in text else f"error: {type(exc).__name__}")


def _sqlite_write_lock(db: Engine, busy_timeout_ms: int) -> None:
    raw = db.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("BEGIN IMMEDIATE")
        cursor.execute("ROLLBACK")
        cursor.close()
    finally:
        raw.close()


@contextmanager
def snapshot(db: Engine) -> Iterator[Connection]:
    """A connection whose reads all see one committed state, so that a view made of several
    statements (the report) agrees with itself while messages keep arriving: PostgreSQL at
    REPEATABLE READ; SQLite inside a read transaction begun at once (in WAL mode its first read
    fixes what every later one sees).  Nothing is written; the transaction ends with the block."""
    with db.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        else:
            conn.exec_driver_sql("BEGIN")
        yield conn
