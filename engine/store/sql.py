"""Driver-level statements for the hot paths (ledger, outbound queue), inside the caller's
SQLAlchemy transaction.

Through SQLAlchemy Core, each of the handful of statements a message needs cost more CPU than
the database's own work.  These helpers run plain SQL, written once with `?` placeholders, on the
connection's DBAPI cursor: sqlite3 as is, psycopg with `%s`.  Values are stored the way
SQLAlchemy stores them (SQLite: datetimes as `YYYY-MM-DD HH:MM:SS.ffffff` text, booleans as 0/1),
so Core reads (the CLI's views) see the same rows.

For SQLite the datetime format is an adapter registered with the sqlite3 module (it replaces the
module's default one, which drops zero microseconds): adapting each parameter in Python cost
more than the statements, so the texts of naive datetimes are remembered (a batch writes the
same `now` many times).  `open_database` registers it (`use_sqlite_text_datetimes`) when it
opens a SQLite database; SQLAlchemy's own SQLite binds pass text, so they never meet it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection


def _sqlite(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


@lru_cache(maxsize=256)
def _format(sql: str) -> str:
    return sql.replace("?", "%s")


_TEXTS_KEPT = 4096  # naive datetimes remembered before the memory starts again


class _DatetimeTexts(dict[datetime, str]):
    """A datetime's text as SQLAlchemy stores it (`isoformat(" ", "microseconds")`), remembered
    for naive datetimes: a batch writes its `now` (and the deadlines computed from it) into
    several rows and columns, and a hit is a look-up in C where a miss is a Python call.
    Aware datetimes are never kept: two equal instants in different offsets are equal keys but
    not the same text.  The adapter is the dict itself: calling it is a look-up."""

    __call__ = dict.__getitem__

    def __missing__(self, value: datetime) -> str:
        text = value.isoformat(" ", "microseconds")
        if value.tzinfo is None:
            if len(self) >= _TEXTS_KEPT:
                self.clear()
            self[value] = text
        return text


# sqlite3 binds int, float, str and bytearray as they are; any other value (None, a bool, bytes)
# first goes through its adapter search, which, with no adapter registered, ends in two failed
# attribute look-ups (about 0.6 us a parameter; a REF has nine such).  These adapters, all in
# C, give the value sqlite3 would have bound anyway.
_SAME_BINDING: dict[type, Callable[[Any], Any]] = {
    type(None): {}.get,  # None: NULL
    bool: int,  # 1 / 0, as sqlite3 binds a bool
    bytes: bytes,  # the same object: a blob
}


def use_sqlite_text_datetimes() -> None:
    """Have the sqlite3 module write datetimes as SQLAlchemy stores them (and bind None, bools
    and bytes without its adapter search, `_SAME_BINDING`).  A process-wide setting of the
    module, so it is made explicitly, by `open_database` for a SQLite URL, never as a side
    effect of an import."""
    sqlite3.register_adapter(datetime, _DatetimeTexts())
    for kind, adapter in _SAME_BINDING.items():
        sqlite3.register_adapter(kind, adapter)


def rows(conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement; its rows (none for DML without RETURNING)."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    if _sqlite(conn):
        cursor.execute(sql, params)
    else:
        cursor.execute(_format(sql), list(params))
    return list(cursor.fetchall()) if cursor.description else []


def many(conn: Connection, sql: str, params: Sequence[Sequence[Any]]) -> None:
    """Run one statement for each parameter row."""
    if not params:
        return
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    if _sqlite(conn):
        cursor.executemany(sql, params)
    else:
        cursor.executemany(_format(sql), [list(row) for row in params])


@lru_cache(maxsize=256)
def _insert_sql(table: str, columns: tuple[str, ...], returning: bool) -> str:
    marks = ", ".join("?" * len(columns))
    tail = " RETURNING id" if returning else ""
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}){tail}"


def insert(conn: Connection, table: str, values: dict[str, Any]) -> int:
    """Insert one row; its id."""
    columns = tuple(values)
    found = rows(conn, _insert_sql(table, columns, True), [values[c] for c in columns])
    return int(found[0][0])


def insert_many(conn: Connection, table: str, values: Sequence[dict[str, Any]]) -> None:
    """Insert rows that all have the same columns."""
    if values:
        columns = tuple(values[0])
        insert_rows(conn, table, columns, [[v[c] for c in columns] for v in values])


def insert_rows(conn: Connection, table: str, columns: tuple[str, ...],
                values: Sequence[Sequence[Any]]) -> None:
    """Insert rows given as their values in `columns`' order."""
    many(conn, _insert_sql(table, columns, False), values)


def update_rows(conn: Connection, table: str, columns: tuple[str, ...],
                values: Sequence[Sequence[Any]]) -> None:
    """Update rows given as their values in `columns`' order, then their id."""
    many(conn, _update_sql(table, columns), values)


@lru_cache(maxsize=256)
def _update_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?"


def update(conn: Connection, table: str, row_id: int, values: dict[str, Any]) -> None:
    """Set columns of the row with this id."""
    if values:
        columns = tuple(values)
        rows(conn, _update_sql(table, columns), [*(values[c] for c in columns), row_id])


@lru_cache(maxsize=16)
def largest_ids(tables: tuple[str, ...]) -> str:
    """A select list of each table's largest id (0 when it is empty)."""
    return ", ".join(f"(SELECT COALESCE(MAX(id), 0) FROM {table})" for table in tables)


def new_ids(conn: Connection, counts: dict[str, int], tops: dict[str, int] | None = None
            ) -> dict[str, list[int]]:
    """So many new ids for each table: from its sequence (PostgreSQL), or past its largest id
    (SQLite, whose single writer holds the write lock until the batch commits,
    engine.store.lock): the largest ids in `tops` when it names the table (read when the batch
    began, engine.store.messages.plan_batch; advanced past the ids given), else read in one
    statement for all the tables."""
    wanted = {table: n for table, n in counts.items() if n}
    out: dict[str, list[int]] = {table: [] for table in counts}
    if not wanted:
        return out
    if conn.dialect.name == "sqlite":
        tops = tops if tops is not None else {}
        unread = [table for table in wanted if table not in tops]
        if unread:
            tops.update(zip(unread, map(int, rows(
                conn, "SELECT " + largest_ids(tuple(unread)))[0]), strict=True))
        for table, n in wanted.items():
            out[table] = list(range(tops[table] + 1, tops[table] + 1 + n))
            tops[table] += n
        return out
    for table, n in wanted.items():
        out[table] = sorted(int(r[0]) for r in rows(
            conn, f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) "
                  "FROM generate_series(1, ?)", [n]))
    return out
