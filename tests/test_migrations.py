"""The Alembic migrations build exactly the tables `engine/store/schema.py` describes.

The code reads and writes through `schema.py`; a migration that drifts from it (a column missing,
a nullability or index different) would only show in production, on the database kind not tried.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from engine.store.database import open_database
from engine.store.schema import metadata


def test_migrated_schema_matches_the_metadata(db_url: str) -> None:
    db = open_database(db_url)
    with db.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        diffs = [d for d in compare_metadata(context, metadata)
                 if not (isinstance(d, tuple) and d[0] == "remove_table"
                         and d[1].name == "alembic_version")]
    db.dispose()
    assert diffs == []
