"""Liveness and readiness (`/healthz`, `/readyz`): what each check found, and the verdict.

Ready means the engine can keep its promise to senders (an AA is given only after a commit):
the database takes a write, every configured channel's listener is bound, and the writer
thread is alive with a recent heartbeat.  The database check is a blocking call, run in a thread
pool on the web's own connection; the rest are read on the reactor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog

from engine.store import Database
from engine.store.database import write_state

log = structlog.get_logger("engine.web")

HEARTBEAT_MAX_S = 10.0  # an idle writer beats every second; a batch longer than this is stuck
BUSY_TIMEOUT_MS = 1000  # SQLite: how long the write check waits for the write lock
OK, BOUND, NOT_BOUND = "ok", "bound", "not bound"


def database_state(db: Database) -> str:
    """`ok` when the database would take a write now, else a short reason (`locked`,
    `read-only`, `error: <type>`): engine.store.database.write_state, logged when not ok."""
    state = write_state(db, BUSY_TIMEOUT_MS)
    if state != OK:
        log.warning("http.database_not_ready", state=state)
    return state


def listener_states(channels: Iterable[str], services: Iterable[Any]) -> dict[str, str]:
    """`bound` or `not bound` for each configured channel, from the service tree's listeners
    (a ListenerService is bound while it has a port; with `workers:` an AcceptorService while it
    has its acceptor)."""
    bound = {s.channel.name for s in services if hasattr(s, "channel") and (
        getattr(s, "listening", None) is not None or getattr(s, "acceptor", None) is not None)}
    return {name: BOUND if name in bound else NOT_BOUND for name in channels}


def readiness(database: str, listeners: dict[str, str], writer_alive: bool,
              heartbeat_age_s: float) -> tuple[bool, dict[str, Any]]:
    """(ready?, the JSON body naming each check)."""
    writer_ok = writer_alive and heartbeat_age_s < HEARTBEAT_MAX_S
    ready = database == OK and all(v == BOUND for v in listeners.values()) and writer_ok
    return ready, {
        "status": "ready" if ready else "not ready",
        "database": database,
        "listeners": listeners,
        "writer": {"alive": writer_alive, "heartbeat_age_s": round(heartbeat_age_s, 1)},
    }
