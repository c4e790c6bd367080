"""The Alembic migrations build exactly the tables `engine/store/schema.py` describes.

The code reads and writes through `schema.py`; a migration that drifts from it (a column missing,
a nullability or index different) would only show in production, on the database kind not tried.
A migration that rewrites rows is tried on a database holding rows from the revision before it.
"""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import Engine, select, text

from engine.ledger import lifecycle as lc
from engine.mappings.changes import PatientId
from engine.store.database import MIGRATIONS, open_database
from engine.store.ledger.repository import insert_patients, referrals_of_patients
from engine.store.schema import metadata, referral_patients
from engine.store.sessions import web_sessions  # noqa: F401 - its table is in `metadata`


def test_migrated_schema_matches_the_metadata(db_url: str) -> None:
    db = open_database(db_url)
    with db.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        diffs = [d for d in compare_metadata(context, metadata)
                 if not (isinstance(d, tuple) and d[0] == "remove_table"
                         and d[1].name == "alembic_version")]
    db.dispose()
    assert diffs == []


def _migrate(db: Engine, revision: str, down: bool = False) -> None:
    """Upgrade (or downgrade) to `revision` as `engine.store.database.upgrade` does to head."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def _patients(db: Engine) -> list[tuple[str, str, str]]:
    with db.connect() as conn:
        return [(r.patient_id, r.authority, r.authority_oid) for r in conn.execute(
            select(referral_patients).order_by(referral_patients.c.id))]


def test_0010_copies_oid_authorities_of_existing_rows_and_matches_them(db_url: str) -> None:
    """A 0009 ledger holding patient ids: after 0010 an `authority` written as an OID (the old
    "CX.4.2 stands in" rule) is also the row's `authority_oid`, others get ""; the old row then
    matches that OID under any namespace, and still its namespace-only twin.  Downgrading puts
    a new OID-only id's OID back in `authority`."""
    db = open_database(db_url, migrate=False)
    _migrate(db, "0009")
    with db.begin() as conn:
        conn.execute(text(
            "INSERT INTO referrals (key_id, source, status, received_at, updated_at) "
            "VALUES ('R1', 'REF', 'pending', '2026-01-12', '2026-01-12')"))
        conn.execute(text("INSERT INTO referral_patients (referral_id, patient_id, authority) "
                          "VALUES (1, '1', 'NORTH'), (1, '2', '2.16.840.1.113883.19'), "
                          "(1, '3', ''), (1, '4', '12345'), (1, '5', '1.2.x')"))
    _migrate(db, "head")
    assert _patients(db) == [("1", "NORTH", ""), ("2", "2.16.840.1.113883.19",
                                                  "2.16.840.1.113883.19"),
                             ("3", "", ""), ("4", "12345", ""), ("5", "1.2.x", "")]
    with db.begin() as conn:
        found = [[r["id"] for r in referrals_of_patients(conn, [p], lc.MATCHABLE)] for p in (
            PatientId("2", "SOUTH", "2.16.840.1.113883.19"),
            PatientId("2", "", "2.16.840.1.113883.19"), PatientId("2", "2.16.840.1.113883.19"),
            PatientId("1", "NORTH", "1.2.3"), PatientId("2", "SOUTH", "1.2.3"))]
        assert found == [[1], [1], [1], [1], []]
        insert_patients(conn, 1, [PatientId("6", "", "1.2.3"), PatientId("7", "NS", "1.2.4")])
    _migrate(db, "0009", down=True)
    with db.connect() as conn:
        assert [tuple(r) for r in conn.execute(text(
            "SELECT patient_id, authority FROM referral_patients WHERE patient_id IN ('6', '7') "
            "ORDER BY id"))] == [("6", "1.2.3"), ("7", "NS")]
    db.dispose()


def _marks(db: Engine) -> list[tuple[object, ...]]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT key_id, first_scheduled_at, ever_seen, ever_no_show FROM referrals "
            "ORDER BY key_id"))]


def test_0015_fills_the_report_marks_as_the_ledger_keeps_them(db_url: str) -> None:
    """The report's ledger (bookings, a no-show, seen and closed referrals): the marks the
    ledger's rules kept as they wrote the history equal what 0015 computes from that history on
    a database migrated from 0014."""
    from test_report import build_ledger

    db = build_ledger(db_url)
    kept = _marks(db)
    assert any(r[1] is not None for r in kept) and any(r[2] for r in kept) and any(r[3] for r in kept)
    _migrate(db, "0014", down=True)
    _migrate(db, "0015")
    assert _marks(db) == kept
    db.dispose()
