"""Property: replaying a stream a second time, so that every message is a retransmission
(docs/hl7-rules.md), leaves the ledger exactly as the first pass left it and stores no new message.

The streams come from the story corpus (`samples/story/`): an order-preserving subsequence of
it, or all of it with retransmissions inserted after their originals.  They run in-process
through `Pipeline.process_batch` in random batch sizes against a fresh SQLite file per example.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, func, select

from engine.ack import AckBuilder
from engine.config import parse_config
from engine.mappings.changes import EI
from engine.parsing import parse
from engine.pipeline import Job, Pipeline, Result
from engine.store.database import open_database
from engine.store.ledger import views
from engine.store.schema import (
    appointment_keys,
    appointments,
    messages,
    referral_events,
    referral_keys,
    referral_patients,
    referrals,
)

STORY = Path(__file__).resolve().parent.parent / "samples" / "story"
CORPUS = [p.read_bytes().replace(b"\n", b"\r") for p in sorted(STORY.glob("*.hl7"))]
CHANNEL = parse_config({"channels": [{
    "name": "referrals", "listen": {"port": 0},
    "accept": ["REF^I12-I15", "RRI^I12-I15", "ORM^O01", "OMG^O19", "OSU^O51", "SIU^S12-S26"],
    "ack": {"application": "REFTRACK", "facility": "HUB"},
    "ledger": {"order_specialties": {"CONSULT-NEUR": "NEUR", "CONSULT-DERM": "DERM"}},
}]}).channels[0]
FIRST = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
LEDGER_TABLES = (referrals, referral_keys, referral_patients, appointments, appointment_keys,
                 referral_events)
TIMESTAMPS = frozenset({"received_at", "updated_at", "due_at", "created_at", "at"})


@st.composite
def streams(draw: st.DrawFn) -> list[int]:
    """Corpus indices: an order-preserving subsequence, or the whole corpus with copies of
    earlier messages (retransmissions) inserted anywhere after their originals."""
    if draw(st.booleans()):
        keep = draw(st.lists(st.booleans(), min_size=len(CORPUS), max_size=len(CORPUS)))
        return [i for i, k in enumerate(keep) if k]
    stream = list(range(len(CORPUS)))
    for _ in range(draw(st.integers(1, 12))):
        original = draw(st.integers(0, len(CORPUS) - 1))
        after = stream.index(original)
        stream.insert(draw(st.integers(after + 1, len(stream))), original)
    return stream


def batches(stream: list[int], sizes: list[int]) -> Iterator[list[int]]:
    """The stream cut into consecutive batches, cycling through `sizes`."""
    it = iter(stream)
    for size in itertools.cycle(sizes):
        batch = list(itertools.islice(it, size))
        if not batch:
            return
        yield batch


def run(pipeline: Pipeline, stream: list[int], sizes: list[int]) -> list[Result]:
    """Every message of the stream through the pipeline, batch by batch."""
    results: list[Result] = []
    for batch in batches(stream, sizes):
        results += pipeline.process_batch(
            [Job(CHANNEL, CORPUS[i], "127.0.0.1:1", FIRST) for i in batch])
    return results


def without_timestamps(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in TIMESTAMPS}


def snapshot(conn: Connection) -> dict[str, Any]:
    """The ledger as the CLI shows it (JSON views, every referral's history), timestamps
    removed, plus the row count of every ledger table."""
    found = [views.find_referral(conn, EI.parse(r["id"])) for r in views.list_referrals(conn)]
    return {
        "referrals": [
            {**without_timestamps(r), "history": [without_timestamps(h) for h in r["history"]]}
            for r in found if r is not None],
        "appointments": [without_timestamps(a) for a in views.list_appointments(conn)],
        "worklist": [without_timestamps(a) for a in views.list_appointments(conn, worklist=True)],
        "rows": {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                 for t in LEDGER_TABLES},
    }


def outcomes(conn: Connection) -> list[tuple[Any, ...]]:
    """Every stored message and what the engine made of it."""
    return [tuple(r) for r in conn.execute(
        select(messages.c.id, messages.c.control_id, messages.c.status, messages.c.error_code,
               messages.c.error_location, messages.c.ack_codes, messages.c.ledger_effect)
        .order_by(messages.c.id))]


_examples = itertools.count()


def fresh_database(sqlite_url: str) -> Engine:
    """A new SQLite file next to the fixture's, one per Hypothesis example (the fixture itself
    is set up once per test, not per example)."""
    return open_database(sqlite_url.replace("engine.db", f"replay-{next(_examples)}.db"))


def ack_codes(result: Result) -> list[tuple[str, str]]:
    return [(parse(a)["MSA.1"], parse(a)["ERR.3"] or parse(a)["ERR.1.4"]) for a in result.acks]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stream=streams(), first_sizes=st.lists(st.integers(1, 8), min_size=1, max_size=6),
       replay_sizes=st.lists(st.integers(1, 8), min_size=1, max_size=6))
def test_replaying_a_stream_changes_nothing(sqlite_url: str, stream: list[int],
                                            first_sizes: list[int],
                                            replay_sizes: list[int]) -> None:
    """A stream, then the same stream again a day later (in other batch sizes): every message of
    the second pass is a retransmission answered with the ACK codes its original got, no
    message row is added, and the ledger's views, histories and row counts are unchanged."""
    db = fresh_database(sqlite_url)
    clock = [FIRST]
    pipeline = Pipeline(db, {"referrals": AckBuilder("REFTRACK", "HUB")}, clock=lambda: clock[0])
    try:
        first = run(pipeline, stream, first_sizes)
        with db.connect() as conn:
            before, stored = snapshot(conn), outcomes(conn)
        assert len(stored) == len(set(stream))

        clock[0] = FIRST + timedelta(days=1)
        again = run(pipeline, stream, replay_sizes)
        with db.connect() as conn:
            assert outcomes(conn) == stored
            assert snapshot(conn) == before

        assert all(r.retransmission for r in again)
        original: dict[int, Result] = {}  # corpus index -> its first occurrence's result
        for i, result in zip(stream, first, strict=True):
            original.setdefault(i, result)
        assert [ack_codes(r) for r in again] == [ack_codes(original[i]) for i in stream]
        assert [r.message_id for r in again] == [original[i].message_id for i in stream]
    finally:
        pipeline.close()
        db.dispose()
