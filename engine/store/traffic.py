"""Each channel's traffic over the last hour, as the dashboard shows it: messages per minute,
how many were accepted, errored and rejected, and the age of the channel's last message.

A plain blocking view function over a connection (run in the web's thread pool); it reads only
counts and times of the message log, never a body.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from engine.store.schema import messages

HOUR = timedelta(hours=1)
STATUSES = ("accepted", "errored", "rejected")


def _minute(conn: Connection) -> Any:
    """`received_at` cut to the minute, as text `YYYY-MM-DD HH:MM` (in SQL)."""
    if conn.dialect.name == "sqlite":
        return func.strftime("%Y-%m-%d %H:%M", messages.c.received_at)
    return func.to_char(func.date_trunc("minute", messages.c.received_at), "YYYY-MM-DD HH24:MI")


def channel_traffic(conn: Connection, channels: list[str], now: datetime
                    ) -> list[dict[str, Any]]:
    """Per channel (in the order given): `per_minute` (60 counts, the oldest minute first, the
    current one last), `counts` by status over the last hour, and `last_age_s` (seconds since
    its last message, None without one)."""
    start = (now - HOUR).replace(second=0, microsecond=0) + timedelta(minutes=1)
    minute = _minute(conn)
    rows = conn.execute(
        select(messages.c.channel, minute, messages.c.status, func.count())
        .where(messages.c.received_at >= start)
        .group_by(messages.c.channel, minute, messages.c.status)).all()
    labels = [(start + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M") for i in range(60)]
    index = {label: i for i, label in enumerate(labels)}
    out: dict[str, dict[str, Any]] = {
        name: {"channel": name, "per_minute": [0] * 60, "counts": dict.fromkeys(STATUSES, 0),
               "last_age_s": None} for name in channels}
    for channel, label, status, n in rows:
        found = out.get(channel)
        if found is None:
            continue
        if label in index:
            found["per_minute"][index[label]] += int(n)
        found["counts"][status] = found["counts"].get(status, 0) + int(n)
    for name, found in out.items():
        last = conn.execute(select(messages.c.received_at).where(messages.c.channel == name)
                            .order_by(messages.c.received_at.desc()).limit(1)).scalar()
        found["last_age_s"] = None if last is None else round((now - last).total_seconds(), 1)
    return list(out.values())
