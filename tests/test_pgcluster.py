"""Tests for the database URL fixtures (``pg_url``, ``db_url``) from ``conftest.py``."""

from __future__ import annotations

import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    inspect,
    make_url,
    select,
)

#: URLs handed out by ``pg_url`` so far in this session.
_seen_pg_urls: list[str] = []


def _roundtrip(url: str) -> list[tuple[int, str]]:
    """Check the database is empty, then CREATE TABLE / INSERT / SELECT through SQLAlchemy."""
    engine = create_engine(url)
    try:
        assert inspect(engine).get_table_names() == [], "database is not empty"
        metadata = MetaData()
        items = Table(
            "items",
            metadata,
            Column("id", Integer, primary_key=True),
            Column("name", String(50), nullable=False),
        )
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(items.insert(), [{"id": 1, "name": "ADT^A01"}, {"id": 2, "name": "ORU"}])
        with engine.connect() as conn:
            rows = conn.execute(select(items.c.id, items.c.name).order_by(items.c.id)).all()
        return [(row.id, row.name) for row in rows]
    finally:
        engine.dispose()


@pytest.mark.parametrize("attempt", [1, 2])
def test_pg_url_gives_fresh_working_database(pg_url: str, attempt: int) -> None:
    """Each test gets its own empty database (the same table is created both times)."""
    url = make_url(pg_url)
    assert url.drivername == "postgresql+psycopg"
    assert url.database is not None and url.database.startswith("t_")
    assert str(url.query["host"]).startswith("/")
    assert pg_url not in _seen_pg_urls
    _seen_pg_urls.append(pg_url)

    assert _roundtrip(pg_url) == [(1, "ADT^A01"), (2, "ORU")]


def test_db_url_works_for_both_backends(db_url: str, request: pytest.FixtureRequest) -> None:
    """``db_url`` is a working SQLite URL for ``[sqlite]`` and PostgreSQL for ``[postgres]``."""
    backend = request.node.callspec.params["db_url"]
    expected_dialect = {"sqlite": "sqlite", "postgres": "postgresql"}[backend]
    assert make_url(db_url).get_backend_name() == expected_dialect

    assert _roundtrip(db_url) == [(1, "ADT^A01"), (2, "ORU")]
