"""The message store's queries: record a batch (with duplicate detection), read the log back.

Plain synchronous functions `f(connection, ...) -> plain values`, run by the writer
thread or by a CLI command.  Nothing here knows HL7 beyond the columns.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Connection, Row, Select, func, select, update

from engine.store import sql
from engine.store.schema import column_names, messages
from engine.timestamps import utc_text

LOG_COLUMNS = [c for c in messages.c if c.name != "raw"]


class Stored(NamedTuple):
    """What the store made of one prepared row."""

    message_id: int
    retransmission: bool = False  # same sender, MSH-10 and bytes as `message_id`: not stored again
    reused: bool = False  # same sender and MSH-10, other bytes: stored and flagged
    original: dict[str, Any] | None = None  # for a retransmission, the first row's outcome


def record_batch(conn: Connection, rows: Sequence[dict[str, Any]], now: datetime) -> list[Stored]:
    """Insert every row not already stored, in order, inside the caller's transaction
    (`plan_batch`, then `insert_batch` at once)."""
    stored = plan_batch(conn, rows)
    insert_batch(conn, rows, stored, now)
    return stored


def plan_batch(conn: Connection, rows: Sequence[dict[str, Any]],
               tops: dict[str, int] | None = None) -> list[Stored]:
    """What the store will make of each row, nothing written yet: a new row gets its id
    (`row["id"]`, the one `insert_batch` inserts it with); a row whose dedupe key and digest
    match a stored row (or one earlier in this batch) is a retransmission (a resend of the same
    message by the same sender): it is not inserted, and the stored row's counter goes up.
    On SQLite the ids are the next past the largest, as SQLite itself would give them: the
    batch holds the write lock until it commits (engine.store.lock); the largest ids of the
    tables `tops` names are read in the same statement, for `sql.new_ids` to give theirs
    without another (PostgreSQL: `tops` is left as it is, sequences give the ids)."""
    known, top = _known(conn, sorted({r["dedupe_key"] for r in rows if r["dedupe_key"]}),
                        tops if tops is not None else {})
    originals: list[dict[str, Any] | None] = []
    fresh: list[dict[str, Any]] = []
    for row in rows:
        key = row["dedupe_key"]
        earlier: Sequence[dict[str, Any]] = known.get(key, ()) if key else ()
        original = next((e for e in earlier if e["digest"] == row["digest"]), None
                        ) if earlier else None
        originals.append(original)
        if original is None:
            row["control_id_reused"] = bool(earlier)
            fresh.append(row)
            if key:
                known.setdefault(key, []).append(row)
    ids = range(top + 1, top + 1 + len(fresh)) if top is not None else sql.new_ids(
        conn, {"messages": len(fresh)})["messages"]
    for row, message_id in zip(fresh, ids, strict=True):
        row["id"] = message_id
    return [Stored(row["id"], False, row["control_id_reused"]) if o is None else
            Stored(int(o["id"]), True, False, _outcome(conn, o))
            for row, o in zip(rows, originals, strict=True)]


def insert_batch(conn: Connection, rows: Sequence[dict[str, Any]], stored: Sequence[Stored],
                 now: datetime) -> None:
    """Insert the new rows as they are now (the ledger's outcome and effect included), with the
    ids `plan_batch` gave them, and count the retransmissions on their originals."""
    _insert(conn, [row for row, s in zip(rows, stored, strict=True) if not s.retransmission])
    _count_retransmissions(conn, [s.message_id for s in stored if s.retransmission], now)


_OUTCOME = ("id", "dedupe_key", "digest", "status", "stage", "error_code", "error_location",
            "error_text", "ack_codes")
_INSERTED = ["id", *column_names(messages, ("id", "purged_at"))]  # purged_at NULL: kept

# The hot path (one SELECT and one INSERT per batch) talks to SQLite's driver directly: through
# SQLAlchemy Core the same two statements cost about three times as much CPU per message.  The
# statements are plain SQL over the same table, inside the same SQLAlchemy transaction.
_INSERTED_VALUES = operator.itemgetter(*_INSERTED)
_SQLITE_INSERT = (f"INSERT INTO messages ({', '.join(_INSERTED)}) "
                  f"VALUES ({', '.join('?' * len(_INSERTED))})")


def _known(conn: Connection, keys: list[str], tops: dict[str, int]
           ) -> tuple[dict[str, list[dict[str, Any]]], int | None]:
    """Stored (id, digest) by dedupe key, for every key of the batch; on SQLite, in the same
    statement, the largest id (None: PostgreSQL, whose sequence gives the ids) and those of
    the tables `tops` names (into `tops`)."""
    known: dict[str, list[dict[str, Any]]] = {}
    top: int | None = None
    if conn.dialect.name == "sqlite":
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(_top_sql(tuple(tops)) + (
            f" UNION ALL SELECT id, dedupe_key, digest{', NULL' * len(tops)} FROM messages "
            f"WHERE dedupe_key IN ({', '.join('?' * len(keys))})" if keys else ""), keys)
        found = cursor.fetchall()
        first = next(f for f in found if f[1] is None)
        top = int(first[0])
        tops.update(zip(tops, map(int, first[3:]), strict=True))
        found = [f[:3] for f in found if f[1] is not None]
    elif keys:
        query = select(messages.c.id, messages.c.dedupe_key, messages.c.digest).where(
            messages.c.dedupe_key.in_(keys))
        found = list(conn.execute(query))
    else:
        found = []
    for message_id, key, digest in found:
        known.setdefault(key, []).append({"id": message_id, "digest": digest})
    return known, top


@lru_cache(maxsize=8)
def _top_sql(tables: tuple[str, ...]) -> str:
    """The row of the largest ids: the messages' (with two NULLs), then each table's."""
    return f"SELECT {sql.largest_ids(('messages',))}, NULL, NULL" + (
        f", {sql.largest_ids(tables)}" if tables else "")


def _outcome(conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
    """The stored outcome of an original, read only for a retransmission (rare)."""
    if "status" in row:  # stored earlier in this same batch: the row itself
        return row
    found = conn.execute(select(*(messages.c[n] for n in _OUTCOME))
                         .where(messages.c.id == row["id"])).mappings().one()
    return dict(found)


def _insert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert in order, with their ids."""
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.executemany(_SQLITE_INSERT, map(_INSERTED_VALUES, rows))
        return
    conn.execute(messages.insert(), [{c: r[c] for c in _INSERTED} for r in rows])


def _count_retransmissions(conn: Connection, originals: list[int], now: datetime) -> None:
    counts: dict[int, int] = {}
    for message_id in originals:
        counts[message_id] = counts.get(message_id, 0) + 1
    for message_id, n in counts.items():
        conn.execute(
            update(messages)
            .where(messages.c.id == message_id)
            .values(retransmissions=messages.c.retransmissions + n, last_retransmission_at=now)
        )


def log_rows(
    conn: Connection,
    *,
    after_id: int = 0,
    limit: int = 20,
    channel: str | None = None,
    message_type: str | None = None,
    status: str | None = None,
    newest: bool = False,
) -> list[Row[Any]]:
    """Message log rows (no bodies), oldest first.  `newest` takes the last `limit` instead."""
    q = _log_filter(select(*LOG_COLUMNS).where(messages.c.id > after_id), channel,
                    message_type, status)
    if newest:
        rows = list(conn.execute(q.order_by(messages.c.id.desc()).limit(limit)))
        return rows[::-1]
    return list(conn.execute(q.order_by(messages.c.id).limit(limit)))


def count_rows(conn: Connection, *, channel: str | None = None,
               message_type: str | None = None, status: str | None = None) -> int:
    """How many stored messages pass `log_rows`' filters."""
    q = _log_filter(select(func.count()).select_from(messages), channel, message_type, status)
    return int(conn.execute(q).scalar_one())


def _log_filter(q: Select[Any], channel: str | None, message_type: str | None,
                status: str | None) -> Select[Any]:
    """`tail`'s filters: channel, MSH-9 type, status."""
    if channel:
        q = q.where(messages.c.channel == channel)
    if message_type:
        q = q.where(messages.c.message_type == message_type)
    if status:
        q = q.where(messages.c.status == status)
    return q


def message_row(conn: Connection, message_id: int, *, with_raw: bool = False) -> Row[Any] | None:
    """One stored message, with its body only when asked."""
    cols = list(messages.c) if with_raw else LOG_COLUMNS
    return conn.execute(select(*cols).where(messages.c.id == message_id)).first()


_AMENDED = ("status", "stage", "error_code", "error_location", "error_text", "ack_codes",
            "ledger_effect")


def amend(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Write the ledger's outcome and effect of rows inserted before the ledger ran (by their
    `id`), in one statement."""
    sql.update_rows(conn, "messages", _AMENDED, [[*(r[c] for c in _AMENDED), r["id"]]
                                                 for r in rows])


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Which stored messages a page of the log shows: by channel, sender (MSH-3, or
    `MSH-3^MSH-4`), type (`REF^I12`), status, control id (MSH-10), received in
    [`since`, `until`)."""

    channel: str | None = None
    sender: str | None = None
    message_type: str | None = None
    status: str | None = None
    control_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def message_page(conn: Connection, which: MessageFilter, *, before: int | None = None,
                 limit: int) -> tuple[list[Row[Any]], int | None]:
    """One page of the message log, newest first (keyset paging): the first `limit` rows (no
    bodies) with an id below `before`, and the id to continue before (None on the last page)."""
    q = select(*LOG_COLUMNS)
    if before is not None:
        q = q.where(messages.c.id < before)
    for column, value in ((messages.c.channel, which.channel),
                          (messages.c.message_type, which.message_type),
                          (messages.c.status, which.status),
                          (messages.c.control_id, which.control_id)):
        if value:
            q = q.where(column == value)
    if which.sender:
        application, _, facility = which.sender.partition("^")
        q = q.where(messages.c.sending_application == application)
        if facility:
            q = q.where(messages.c.sending_facility == facility)
    if which.since is not None:
        q = q.where(messages.c.received_at >= which.since)
    if which.until is not None:
        q = q.where(messages.c.received_at < which.until)
    rows = list(conn.execute(q.order_by(messages.c.id.desc()).limit(limit + 1)))
    return rows[:limit], (int(rows[limit - 1].id) if len(rows) > limit else None)


def log_record(row: Any) -> dict[str, Any]:
    """A message's log row as `tail --json` and `show --json` print it (no body)."""
    return {
        "id": row.id,
        "received_at": utc_text(row.received_at),
        "channel": row.channel,
        "peer": row.peer,
        "sender": f"{row.sending_application}^{row.sending_facility}".strip("^"),
        "type": row.message_type,
        "control_id": row.control_id,
        "version": row.version,
        "size": row.size,
        "digest": row.digest,
        "status": row.status,
        "ack": row.ack_codes,
        "error_code": row.error_code,
        "error_location": row.error_location,
        "error_text": row.error_text,
        "control_id_reused": bool(row.control_id_reused),
        "retransmissions": row.retransmissions,
        "ledger_effect": row.ledger_effect,
    }
