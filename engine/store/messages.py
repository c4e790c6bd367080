"""The message store's queries: record a batch (with duplicate detection), read the log back.

Plain synchronous functions `f(connection, ...) -> plain values`, run by the writer
thread or by a CLI command.  Nothing here knows HL7 beyond the columns.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Row, Select, func, select, update

from engine.store import sql
from engine.store.schema import messages
from engine.timestamps import utc_text

LOG_COLUMNS = [c for c in messages.c if c.name != "raw"]


class Stored(NamedTuple):
    """What the store made of one prepared row."""

    message_id: int
    retransmission: bool = False  # same sender, MSH-10 and bytes as `message_id`: not stored again
    reused: bool = False  # same sender and MSH-10, other bytes: stored and flagged
    original: dict[str, Any] | None = None  # for a retransmission, the first row's outcome


def record_batch(conn: Connection, rows: Sequence[dict[str, Any]], now: datetime) -> list[Stored]:
    """Insert every row not already stored, in order, inside the caller's transaction.

    A row whose dedupe key and digest match a stored row (or one earlier in this batch) is a
    retransmission (a resend of the same message by the same sender): it is not inserted, and the stored row's counter goes up.
    """
    known = _known(conn, sorted({r["dedupe_key"] for r in rows if r["dedupe_key"]}))
    plan: list[tuple[int, dict[str, Any] | None, bool]] = []  # (row index, original, reused)
    fresh: list[dict[str, Any]] = []
    for row in rows:
        key = row["dedupe_key"]
        earlier = known.get(key, []) if key else []
        original = next((e for e in earlier if e["digest"] == row["digest"]), None)
        if original is not None:
            plan.append((-1, original, False))
            continue
        reused = bool(earlier)
        row["control_id_reused"] = reused
        plan.append((len(fresh), None, reused))
        fresh.append(row)
        if key:
            known.setdefault(key, []).append(row)
    ids = _insert(conn, fresh)
    for i, row in enumerate(fresh):
        row["id"] = ids[i]
    _count_retransmissions(conn, [o for _, o, _ in plan if o is not None], now)
    out: list[Stored] = []
    for index, original, reused in plan:
        if original is not None:
            out.append(Stored(int(original["id"]), retransmission=True,
                              original=_outcome(conn, original)))
        else:
            out.append(Stored(ids[index], reused=reused))
    return out


_OUTCOME = ("id", "dedupe_key", "digest", "status", "stage", "error_code", "error_location",
            "error_text", "ack_codes")
_INSERTED = [c.name for c in messages.c if c.name not in ("id", "purged_at")]  # NULL: kept

# The hot path (one SELECT and one INSERT per batch) talks to SQLite's driver directly: through
# SQLAlchemy Core the same two statements cost about three times as much CPU per message.  The
# statements are plain SQL over the same table, inside the same SQLAlchemy transaction.
_INSERTED_VALUES = operator.itemgetter(*_INSERTED)
_SQLITE_INSERT = (f"INSERT INTO messages ({', '.join(_INSERTED)}) "
                  f"VALUES ({', '.join('?' * len(_INSERTED))})")


def _known(conn: Connection, keys: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Stored (id, digest) by dedupe key, for every key of the batch."""
    known: dict[str, list[dict[str, Any]]] = {}
    if not keys:
        return known
    if conn.dialect.name == "sqlite":
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        marks = ", ".join("?" * len(keys))
        cursor.execute(f"SELECT id, dedupe_key, digest FROM messages "
                       f"WHERE dedupe_key IN ({marks})", keys)
        found = cursor.fetchall()
    else:
        query = select(messages.c.id, messages.c.dedupe_key, messages.c.digest).where(
            messages.c.dedupe_key.in_(keys))
        found = list(conn.execute(query))
    for message_id, key, digest in found:
        known.setdefault(key, []).append({"id": message_id, "digest": digest})
    return known


def _outcome(conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
    """The stored outcome of an original, read only for a retransmission (rare)."""
    if "status" in row:  # stored earlier in this same batch: the row itself
        return row
    found = conn.execute(select(*(messages.c[n] for n in _OUTCOME))
                         .where(messages.c.id == row["id"])).mappings().one()
    return dict(found)


def _insert(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert in order; the new ids, in the same order."""
    if not rows:
        return []
    if conn.dialect.name == "sqlite":
        # The write transaction holds SQLite's write lock, so one executemany's rowids are
        # consecutive and end at last_insert_rowid().
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.executemany(_SQLITE_INSERT, map(_INSERTED_VALUES, rows))
        last = int(cursor.execute("SELECT last_insert_rowid()").fetchone()[0])
        return list(range(last - len(rows) + 1, last + 1))
    result = conn.execute(
        messages.insert().returning(messages.c.id, sort_by_parameter_order=True),
        [{c: r[c] for c in _INSERTED} for r in rows],
    )
    return [int(i) for i in result.scalars()]


def _count_retransmissions(conn: Connection, originals: list[dict[str, Any]], now: datetime) -> None:
    counts: dict[int, int] = {}
    for o in originals:
        if "id" in o:
            counts[int(o["id"])] = counts.get(int(o["id"]), 0) + 1
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


def set_outcome(conn: Connection, message_id: int, **values: Any) -> None:
    """Amend a stored message: a content error found by the ledger, or its ledger effect."""
    conn.execute(update(messages).where(messages.c.id == message_id).values(**values))


def set_effects(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Each message's ledger effect (`{"_mid": id, "ledger_effect": text}`), in one statement."""
    sql.many(conn, "UPDATE messages SET ledger_effect = ? WHERE id = ?",
             [(r["ledger_effect"], r["_mid"]) for r in rows])


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
