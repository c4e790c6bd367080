"""The database floor: SQLite alone running the statements the engine's durable ledger needs.

The engine's pipeline first works N messages of the mix in-process, in batches as the bench's
connections give them, while every statement it sends to the SQLite driver is recorded with its
parameters.  Exactly those statements are then replayed on a fresh database of the same schema,
on raw sqlite3 (WAL, `synchronous=FULL`, one commit per batch), with nothing else around them: no
parsing, mapping, ledger logic in Python, ACKs, logging or network.

Its msg/s is a ceiling for any engine that stores what this one stores in the transaction before
its ACK, on one SQLite file on this machine: SQLite has one writer, so more processes cannot
raise it.  `bench.run` prints it beside the bare server of the same run.

    python -m bench.floor [--messages 8000] [--batch 8] [--mix ref,siu]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine

from bench.loadgen import parse_mix
from bench.synth import Synth

Statement = tuple[str, str, Any]  # ("execute" | "many" | "commit", sql, parameters)


@dataclass(frozen=True, slots=True)
class Floor:
    messages: int
    statements: int  # executemany counts once
    commits: int
    seconds: float
    cpu_seconds: float

    @property
    def msg_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (f"db floor {self.msg_per_s:8.0f} msg/s  ({self.seconds / self.messages * 1e6:.0f} "
                f"us/msg, {self.cpu_seconds / self.messages * 1e6:.0f} us CPU; the engine's "
                f"{self.statements / self.messages:.1f} statements and "
                f"{self.commits / self.messages:.3f} commits per message, replayed on sqlite3)")


class _Cursor(sqlite3.Cursor):
    log: list[Statement]

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        self.log.append(("execute", sql, tuple(parameters)))
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        rows = [tuple(p) for p in parameters]
        self.log.append(("many", sql, rows))
        return super().executemany(sql, rows)


class _Connection(sqlite3.Connection):
    """A driver connection that records what it is asked to do."""

    log: list[Statement] = []

    def cursor(self, factory: Any = None) -> Any:
        cursor = super().cursor(factory or _Cursor)
        cursor.log = self.log
        return cursor

    def commit(self) -> None:
        self.log.append(("commit", "", None))
        super().commit()


def _sqlite(path: Path, recording: bool) -> Engine:
    """The database as the engine opens it (its pragmas, its migrations); `recording`: through
    driver connections that record every statement."""
    from engine.store.database import _sqlite_pragmas, upgrade

    args: dict[str, Any] = {"timeout": 30}
    if recording:
        args["factory"] = _Connection
    engine = create_engine(f"sqlite:///{path}", connect_args=args)
    _sqlite_pragmas(engine, "FULL")
    upgrade(engine)
    return engine


def record(folder: Path, mix: tuple[str, ...], messages: int, batch: int
           ) -> tuple[list[Statement], int]:
    """The statements (and commits) the pipeline sends to SQLite for a first message, then for
    `messages` of the mix; and how many of them are the first message's (not timed)."""
    from engine.ack import AckBuilder
    from engine.config import parse_config
    from engine.pipeline import Job, Pipeline

    channel = parse_config({"channels": [{"name": "bench", "listen": {"port": 0},
                                          "accept": ["REF^I12-I15", "SIU^S12-S26"]}]}).channels[0]
    db = _sqlite(folder / "recorded.db", recording=True)
    pipeline = Pipeline(db, {channel.name: AckBuilder("REFTRACK", "HUB")})
    synth = Synth(mix)
    payloads = [synth.next().payload for _ in range(messages)]
    _Connection.log.clear()  # the schema's creation
    pipeline.process_batch([Job(channel, synth.next().payload, "bench", datetime.now(UTC))])
    first = len(_Connection.log)  # the connection's first statements: not timed
    for start in range(0, messages, batch):
        pipeline.process_batch([Job(channel, p, "bench", datetime.now(UTC))
                                for p in payloads[start:start + batch]])
    pipeline.close()
    db.dispose()
    statements = [s for s in _Connection.log if not s[1].startswith("PRAGMA")]
    untimed = len([s for s in _Connection.log[:first] if not s[1].startswith("PRAGMA")])
    return statements, untimed



def replay(folder: Path, statements: list[Statement], untimed: int, messages: int) -> Floor:
    """`statements` on a fresh database of the same schema, timed after the first `untimed`;
    the tables must then hold what the recorded run left."""
    path = folder / "replayed.db"
    _sqlite(path, recording=False).dispose()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=FULL")  # WAL and auto_vacuum stay with the file
    _run(conn, statements[:untimed])
    started, cpu = time.perf_counter(), time.process_time()
    _run(conn, statements[untimed:])
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    replayed = _counts(conn)
    conn.close()
    recorded = _counts(sqlite3.connect(folder / "recorded.db"))
    if replayed != recorded:  # the recording missed statements: the figure would flatter
        raise RuntimeError(f"the replay does not rebuild the ledger: {replayed} != {recorded}")
    timed = statements[untimed:]
    commits = sum(1 for s in timed if s[0] == "commit")
    return Floor(messages, len(timed) - commits, commits, seconds, cpu)


def _run(conn: sqlite3.Connection, statements: list[Statement]) -> None:
    cursor = conn.cursor()
    for kind, sql, parameters in statements:
        if kind == "execute":
            cursor.execute(sql, parameters).fetchall()
        elif kind == "many":
            cursor.executemany(sql, parameters)
        else:
            conn.commit()


def _counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows per ledger table (the recorded database also has the untimed first message)."""
    return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # noqa: S608
            for t in ("messages", "referrals", "referral_keys", "referral_patients",
                      "appointments", "referral_events")}


def floor(mix: tuple[str, ...], messages: int = 8000, batch: int = 8) -> Floor:
    with tempfile.TemporaryDirectory(prefix="hl7-floor-") as tmp:
        statements, untimed = record(Path(tmp), mix, messages, batch)
        return replay(Path(tmp), statements, untimed, messages)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=8000)
    p.add_argument("--batch", type=int, default=8, help="messages per commit (the bench's "
                                                        "8 connections give 8)")
    p.add_argument("--mix", default="ref,siu", help="message kinds, round-robin: ref, siu")
    a = p.parse_args(argv)
    if min(a.messages, a.batch) < 1:
        p.error("--messages and --batch must be >= 1")
    print(floor(parse_mix(a.mix), a.messages, a.batch).line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
