"""A batch of frames through the writer thread: prepare each (engine/prepare.py) ▸ store them, their
ledger changes and queue rows in one transaction ▸ build the ACKs.

`Pipeline.process_batch` is the group-commit unit: every frame waiting is prepared (pure), then
recorded in one transaction, and only after the commit are ACKs built.  A batch that fails on
another writer's lock on PostgreSQL (a deadlock between two engines' batches) is run again from
its prepared state, up to LOCK_RETRIES times, before anything is answered (SQLite's writer has
already waited for its lock).  If the commit fails,
every frame of the batch is answered AE/CE 207 and nothing is promised (docs/acknowledgements.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import structlog

from engine.ack import ACCEPTED, AckBuilder, Stage, Verdict, ack_codes, fallback_ack
from engine.config import Config
from engine.errors import (
    CommitFailed,
    ContentError,
    Disposition,
    HL7Error,
    InternalError,
    Location,
    RecordLocked,
)
from engine.ledger import rules
from engine.ledger.settings import LedgerSettings
from engine.ledger.state import Ledger
from engine.prepare import Job as Job  # the writer's unit of work, for the listener side
from engine.prepare import Prepared, prepare_safely, row_of
from engine.routes.enqueue import Enqueuer, Routed
from engine.routes.event_queue import EventRouter
from engine.store import Connection, Database, keylocks, sql
from engine.store.batch import BatchStore, StoreFailed, StoreLocked
from engine.store.ledger import ingest
from engine.store.lock import WriteLock
from engine.store.messages import Stored, amend, insert_batch, plan_batch
from engine.store.relayed import Waiting

log = structlog.get_logger("engine.pipeline")
LOCK_RETRIES = 3  # PostgreSQL: a batch that failed on another's lock is run again so many times


class Result(NamedTuple):
    """What goes back to the listener: the ACKs to write and what to log."""

    acks: list[bytes]
    verdict: Verdict
    message_id: int | None
    control_id: str
    message_type: str
    digest: str
    retransmission: bool = False
    reused: bool = False
    committed: bool = True
    waiting: Waiting | None = None  # pass-through: the queue row whose answer is relayed


class _LedgerBug(Exception):
    """Applying message `index` of a batch raised something other than a database error."""

    def __init__(self, index: int, error: str) -> None:
        super().__init__(error)
        self.index = index
        self.error = error


class Pipeline:
    """Holds one ACK builder per channel, the database and what the configuration asks of a
    batch (routes, order keys, pass-through channels, the ledger's time rules): complete when
    constructed, and replaced whole by a reload."""

    def __init__(self, db: Database, builders: dict[str, AckBuilder],
                 config: Config | None = None, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 lock: WriteLock | None = None,
                 settings: LedgerSettings | None = None) -> None:
        """`config` gives the routes, destinations, channels and `ledger:` settings (None: no
        routes); `settings` gives the ledger's time rules alone, for a pipeline without one."""
        if config is not None and settings is not None:
            raise ValueError("give the ledger settings through the config or alone, not both")
        self._store_batch = BatchStore(db, lock)  # the transaction, its lock and failures
        self._postgres = db.dialect.name == "postgresql"  # locks keys, retries a deadlock
        self._builders = builders
        self._clock = clock
        self._ledger = settings or LedgerSettings()  # `ledger:`: the time rules
        self._enqueue = Enqueuer()
        self._events: EventRouter | None = None  # `on:` routes; None: the ledger collects none
        self._pending: Config | None = None  # a reloaded config, taken at the next batch
        if config is not None:
            self._take(config)

    def _take(self, config: Config) -> None:
        """Take this configuration's routes, destinations' order keys, pass-through channels
        and ledger settings, in the order they depend on each other (now, on this thread): the
        event routes are keyed by the destinations only once both are known."""
        enqueue = Enqueuer()
        enqueue.route(config.routes)
        enqueue.order_by(config.destinations)
        enqueue.answer_from(config.channels)
        events = EventRouter.of(config.routes, [(name, b.application, b.facility)
                                                for name, b in self._builders.items()])
        self._enqueue = enqueue
        self._events = events.keyed(config.destinations) if events is not None else None
        self._ledger = config.ledger

    def reconfigure(self, config: Config) -> None:
        """A reload (any thread): the writer takes `config` before its next batch, so a batch
        never sees half of one configuration and half of another."""
        self._pending = config

    def process_batch(self, jobs: list[Job]) -> list[Result]:
        """Prepare, commit in one transaction, then build every ACK.

        A bug in the ledger for one message (not a database error) rolls the batch back, marks
        that message AR 207 without ledger changes, and runs the batch again: one poison message
        never blocks the others.
        """
        pending, self._pending = self._pending, None
        if pending is not None:
            self._take(pending)
        prepared = [prepare_safely(job) for job in jobs]
        now = self._clock().replace(tzinfo=None)
        retries = LOCK_RETRIES if self._postgres else 0
        while True:
            kept = [(dict(p.row), p.verdict, p.changes) for p in prepared] if retries else []
            try:
                stored, waiting = self._store(prepared, now)
            except _LedgerBug as bug:
                p = prepared[bug.index]
                log.error("ledger.apply_failed", error=bug.error, control_id=p.row["control_id"])
                error = InternalError("unexpected error while updating the referral ledger")
                p.verdict = Verdict(error.disposition, Stage.CONTENT, error.code, None,
                                    error.reason)
                p.changes = []
                p.row = row_of(p)
                continue
            except StoreFailed as exc:
                locked = isinstance(exc, StoreLocked)
                if locked and retries:  # rolled back: again, from what was prepared
                    retries -= 1
                    log.warning("store.lock_retry", batch=len(jobs), error=exc.error)
                    for p, (row, verdict, changes) in zip(prepared, kept, strict=True):
                        p.row, p.verdict, p.changes = row, verdict, changes
                    continue
                log.error("store.commit_failed", batch=len(jobs), error=exc.error, locked=locked)
                return [self._uncommitted(p, locked) for p in prepared]
            return [self._finish(p, s, waiting.get(i))
                    for i, (p, s) in enumerate(zip(prepared, stored, strict=True))]

    def _store(self, prepared: list[Prepared], now: datetime
               ) -> tuple[list[Stored], dict[int, Waiting]]:
        """One transaction: the message rows, each message's ledger changes in order, then the
        queue rows (by batch index, the rows pass-through senders wait for).  PostgreSQL: after
        the locks of the keys it touches (engine.store.keylocks)."""
        keys = keylocks.batch_keys([p.row for p in prepared], [
            ch for p in prepared for ch in p.changes]) if self._postgres else []
        return self._store_batch.commit_batch(lambda conn: self._store_in(conn, prepared, now),
                                              keys)

    def _store_in(self, conn: Connection, prepared: list[Prepared], now: datetime
                  ) -> tuple[list[Stored], dict[int, Waiting]]:
        """The batch transaction's statements (the lock, when shared, is held).  Without `on:`
        routes the ledger runs before the message rows are inserted, so each row goes in with
        its ledger outcome and effect; with them, the rows go in first (an event message reads
        the message that opened its referral) and are amended after."""
        rows = [p.row for p in prepared]
        tops = dict.fromkeys(ingest.IDS, 0)  # SQLite: the largest ids, read by plan_batch
        stored = plan_batch(conn, rows, tops)
        todo = [(i, p, s.message_id) for i, (p, s) in enumerate(zip(prepared, stored, strict=True))
                if p.changes and not s.retransmission]
        events: list[dict[str, Any]] = []  # outbound rows of `on:` routes
        if self._events is None:  # one ledger state for the whole batch
            state = ingest.load(conn, [ch for _, p, _ in todo for ch in p.changes])
            self._each(todo, lambda p, message_id: self._to_ledger(state, p, message_id, now))
            insert_batch(conn, rows, stored, now)
            ingest.save(conn, state, tops)
        else:  # each message's events are built from the ledger as that message left it
            insert_batch(conn, rows, stored, now)
            self._each(todo, lambda p, message_id: events.extend(
                self._with_events(conn, p, message_id, now, tops)))
            amend(conn, [p.row for _, p, _ in todo])
        waiting = self._enqueue.queue(conn, [
            Routed(p.job.channel.name, p.msg, p.verdict.accepted, p.row["control_id"],
                   s.message_id, s.retransmission)
            for p, s in zip(prepared, stored, strict=True)], now) if self._enqueue.active else {}
        sql.insert_many(conn, "outbound", events)
        return stored, waiting

    def _each(self, todo: list[tuple[int, Prepared, int]],
              work: Callable[[Prepared, int], object]) -> None:
        """`work(prepared, message_id)` for each message to the ledger, in batch order: an
        exception that is not the database's is that message's ledger bug (`_LedgerBug`)."""
        for i, p, message_id in todo:
            try:
                work(p, message_id)
            except Exception as exc:
                if self._store_batch.is_database_error(exc):
                    raise
                raise _LedgerBug(i, type(exc).__name__) from exc

    def _with_events(self, conn: Connection, p: Prepared, message_id: int, now: datetime,
                     tops: dict[str, int]) -> list[dict[str, Any]]:
        """One message through the ledger on its own state, written back at once (its new rows'
        ids past `tops`, ingest.save), then the outbound rows of the referral events it caused."""
        state = ingest.load(conn, p.changes)
        context = self._to_ledger(state, p, message_id, now)
        ids = ingest.save(conn, state, tops)
        if self._events is None or context is None or not context.events:
            return []
        return self._events.rows(conn, [(ids.get(rid, rid), event)
                                        for rid, event in context.events], message_id, now)

    def _to_ledger(self, state: Ledger, p: Prepared, message_id: int, now: datetime
                   ) -> rules.Context | None:
        """Apply one accepted message's changes to the state, in batch order; a 204/205 turns it
        into AE and changes nothing (the check runs before any change).  The outcome and effect
        go on the message's row.  The context, with the referral events caused (None: AE)."""
        try:
            rules.check(state, p.changes)
        except ContentError as exc:
            p.verdict = Verdict(exc.disposition, Stage.CONTENT, exc.code, exc.location, exc.reason)
            h = p.msg.header if p.msg is not None else None
            codes = ack_codes(p.verdict, h.accept_ack if h else "", h.application_ack if h else "")
            outcome = {"status": p.verdict.disposition.value, "stage": Stage.CONTENT.value,
                       "error_code": exc.code, "error_location": str(exc.location or ""),
                       "error_text": exc.reason, "ack_codes": " ".join(codes)}
            p.row.update(outcome)  # a retransmission later in this batch answers the same
            return None
        context = rules.Context(state, message_id, p.row["control_id"], now, self._ledger,
                                events=[] if self._events else None)
        lines = rules.apply(context, p.changes)
        if lines:
            p.row["ledger_effect"] = "; ".join(lines)
        return context

    def close(self) -> None:
        """Release the connection and the lock file (on the writer thread, when it stops)."""
        self._store_batch.close()

    def _finish(self, p: Prepared, stored: Stored, waiting: Waiting | None) -> Result:
        verdict = p.verdict
        if stored.retransmission and stored.original is not None:
            verdict = _verdict_of(stored.original)
        row = p.row
        return Result(self._acks(p, verdict), verdict, stored.message_id, row["control_id"],
                      row["message_type"], row["digest"], stored.retransmission, stored.reused,
                      True, waiting)

    def _uncommitted(self, p: Prepared, locked: bool = False) -> Result:
        error: HL7Error = RecordLocked("the database is locked by another writer; send it "
                                       "again later") if locked else CommitFailed(
            "the message could not be stored; send it again")
        verdict = Verdict(error.disposition, Stage.COMMIT, error.code, None, error.reason)
        return Result(self._acks(p, verdict), verdict, None, p.row["control_id"],
                      p.row["message_type"], p.row["digest"], committed=False)

    def _acks(self, p: Prepared, verdict: Verdict) -> list[bytes]:
        """The message's ACKs; if building them fails (a bug), the fixed AR 207 of
        `fallback_ack`, so one frame's answer never costs the batch its answers."""
        builder = self._builders[p.job.channel.name]
        try:
            return builder.build(p.msg, verdict)
        except Exception as exc:  # noqa: BLE001 - the frame still gets an answer
            log.error("ack.build_failed", error=type(exc).__name__, channel=p.job.channel.name,
                      digest=p.row.get("digest", "")[:16])
            return [fallback_ack(p.job.raw, control_id=_fallback_id(builder))]


def _verdict_of(row: dict[str, Any]) -> Verdict:
    """The verdict a stored message got, to answer its retransmission the same way."""
    if row["status"] == Disposition.ACCEPTED.value:
        return ACCEPTED
    return Verdict(Disposition(row["status"]), Stage(row["stage"]), row["error_code"],
                   Location.parse(row["error_location"]), row["error_text"])


def failed(builders: dict[str, AckBuilder]) -> Callable[[Job, BaseException], Result]:
    """The answer for a job whose batch raised outside the per-message boundaries (a bug):
    nothing was committed, and the answer is `fallback_ack`'s fixed AR 207, built from
    constants so that it cannot raise in turn."""

    def answer(job: Job, _exc: BaseException) -> Result:
        error = InternalError("the message could not be processed; send it again")
        verdict = Verdict(error.disposition, Stage.COMMIT, error.code, None, error.reason)
        ack = fallback_ack(job.raw, control_id=_fallback_id(builders.get(job.channel.name)))
        return Result([ack], verdict, None, "", "", hashlib.sha256(job.raw).hexdigest(),
                      committed=False)

    return answer


def _fallback_id(builder: AckBuilder | None) -> str:
    """A fresh MSH-10 for a fallback ACK; a fixed one if even that fails."""
    try:
        control = builder.control_ids() if builder is not None else ""
        return control if control.isascii() and control.isalnum() else "FALLBACK"
    except Exception:  # noqa: BLE001 - the fallback must not fail
        return "FALLBACK"
