"""Per-key locks of PostgreSQL writers: which keys a batch locks, and taking them in one go.

Several engines (or `workers:` processes) may write one PostgreSQL database at once.  No lock
covers a whole batch: a transaction that reads before it writes first takes transaction-level
advisory locks (`pg_advisory_xact_lock(bigint)`, released by its commit or rollback) on the
keys it may touch, so two batches with no key in common run side by side, and of two that share
one the second waits, then reads (READ COMMITTED: each statement sees what was committed before
it ran) what the first committed.  The keys, as (kind, text):

* `message`: each message's dedupe key (MSH-3|MSH-4|MSH-10).  Duplicate detection reads the
  stored rows with the key, then inserts: under the lock, a retransmission arriving at two
  engines at once is stored once and counted once (engine.store.messages).  A unique index with
  `INSERT ... ON CONFLICT` cannot do it: a control id reused with other bytes is stored as a row
  of its own under the same key (`control_id_reused`), and the answer to a retransmission is
  the stored original's, read under the same lock.
* `key`: every referral key the ledger changes name (a referral's own key, its external ids and
  filler number, an appointment's links: `keys_named`): creating,
  updating and matching a referral by its key are serialised.
* `appointment`: each appointment change's own key.
* `patient`: every patient id (CX.1) of the changes, a referral's as well as an appointment's:
  a new referral and an appointment whose fallback could match it are serialised.

Each key is a 64-bit BLAKE2b hash of kind and text; two keys that collide only wait for each
other.  The keys are sorted, deduplicated and taken in one statement in that order, after a
shared lock on ALL (the smallest key, which no hash is).  Every advisory lock takes a slot of
PostgreSQL's shared lock table (`max_locks_per_transaction` × connections), so a transaction
with more than MAX_KEYS keys (a batch of hundreds of messages) takes ALL exclusively instead,
and nothing else: it then runs alone, as every batch did before, and the table never fills.

Lock order of every PostgreSQL writer of the ledger, so that waits never form a cycle:

1. the advisory key locks above, ascending, in one statement, before anything is read (an
   ingest batch; `link` on its referral and appointment keys; a purge chunk on the dedupe keys
   of the messages it rewrites, engine.store.retention);
2. row locks (`FOR UPDATE`) on what the ledger state is loaded from: the appointments with a
   key, the unmatched appointments waiting for a key, then the referrals in ascending id order
   (engine.store.ledger.ingest.load_for).  These cover what the keys alone do not: a referral
   reached by one engine through its key and by another through a patient's fallback match, or
   through an appointment linked to it.  The sweep (engine.store.ledger.sweep) takes only the
   referrals' row locks, ascending, and re-reads their status under them.

Two batches can still wait for each other's rows in the rare case where both reach the same
referral by different paths; PostgreSQL then aborts one (deadlock detected), and the pipeline
runs that batch again before answering (engine.pipeline).  SQLite has one writer at a time
(engine.store.lock.WriteLock) and takes none of these.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection

from engine.mappings.changes import AppointmentChange, Change, ReferralChange

_SIGN = 1 << 63
ALL = -_SIGN  # the smallest bigint: every writer's lock, shared (exclusive past MAX_KEYS)
MAX_KEYS = 1000  # more keys than this in one transaction: ALL exclusive instead
_ALL_SQL = f"CAST({ALL} AS bigint)"  # the literal alone is a numeric


def key_of(kind: str, text: str) -> int:
    """The signed 64-bit advisory lock key of (kind, text), never ALL."""
    digest = hashlib.blake2b(f"{kind}\x1f{text}".encode(), digest_size=8).digest()
    return max(int.from_bytes(digest, "big") - _SIGN, ALL + 1)


def keys_named(changes: Iterable[Change]) -> set[str]:
    """The EI.1 of every key the changes name (a referral's own and extra keys, an
    appointment's links to referrals)."""
    out: set[str] = set()
    for ch in changes:
        if isinstance(ch, ReferralChange):
            out.add(ch.key.id)
            out.update(k.id for k in ch.external_ids)
            if ch.filler_order_number is not None:
                out.add(ch.filler_order_number.id)
        else:
            out.update(k.id for k in ch.placer_order_numbers + ch.filler_order_numbers)
            out.update(k.id for _via, keys in ch.other_keys for k in keys)
    out.discard("")
    return out


def ledger_names(changes: Iterable[Change]) -> set[tuple[str, str]]:
    """The (kind, text) of every ledger key the changes can reach (see the module's text)."""
    changes = list(changes)
    names = {("key", k) for k in keys_named(changes)}
    for ch in changes:
        if isinstance(ch, AppointmentChange):
            names.add(("appointment", ch.key.id))
        names.update(("patient", p.id) for p in ch.patient_ids)
    return {(kind, text) for kind, text in names if text}


def batch_keys(rows: Sequence[dict[str, Any]], changes: Iterable[Change]) -> list[int]:
    """A batch's lock keys, sorted and without repeats: its messages' dedupe keys and what its
    ledger changes can reach."""
    names = {("message", str(r["dedupe_key"])) for r in rows if r.get("dedupe_key")}
    return sorted({key_of(kind, text) for kind, text in names | ledger_names(changes)})


def message_keys(dedupe_keys: Iterable[str]) -> list[int]:
    """The lock keys of these dedupe keys, sorted and without repeats."""
    return sorted({key_of("message", k) for k in dedupe_keys if k})


def lock(conn: Connection, keys: Sequence[int]) -> None:
    """Take these advisory locks for the rest of `conn`'s transaction, ALL shared first, in one
    statement and in ascending order; ALL alone, exclusive, past MAX_KEYS; nothing on SQLite."""
    if conn.dialect.name != "postgresql" or not keys:
        return
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    if len(keys) > MAX_KEYS:
        cursor.execute(f"SELECT pg_advisory_xact_lock({_ALL_SQL})")
    else:
        # The sorted subquery is not flattened, so the locks are taken row by row in its order.
        cursor.execute(f"SELECT count(CASE WHEN k = {_ALL_SQL} THEN pg_advisory_xact_lock_shared(k) "
                       "ELSE pg_advisory_xact_lock(k) END) FROM "
                       "(SELECT unnest(%s::bigint[]) AS k ORDER BY 1) AS wanted",
                       [[ALL, *sorted(keys)]])
    cursor.fetchall()
