"""Patient ids keep both parts of PID-3's assigning authority (CX.4.1, the namespace, and
CX.4.2, the OID), so ids from different facilities are compared by authority, never by CX.1
alone.

* `referral_patients.authority_oid`: CX.4.2, the OID (when CX.4.3 is ISO or empty), beside
  `authority`, which is now CX.4.1 (the namespace) only.  Not NULL, `""` when there is none.
* Back-fill: until now `authority` held CX.4.1, or CX.4.2 when CX.4.1 was empty, so an
  existing row cannot tell which it holds.  A row whose `authority` is written as an OID (ASCII
  digits and dots, at least two arcs, `_OID`) gets it *copied* into `authority_oid`; its
  `authority` is kept.  It then matches, as before, an id with that namespace and no OID, and
  also an id carrying that OID (with any namespace, or none).  Other rows get `""`.  The
  distinct authorities are read once and tested here, in Python, so SQLite and PostgreSQL fill
  the same rows; then one UPDATE per OID-like authority.
* Downgrade: an id stored with an OID and no namespace gets the OID back in `authority` (the
  old "CX.4.2 stands in" rule), then the column goes; a namespace's OID is lost.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# As engine.mappings.fields._OID, frozen here: the back-fill must not change with the code.
_OID = re.compile(r"[0-9]+(?:\.[0-9]+)+")

_patients = sa.table("referral_patients", sa.column("authority", sa.String),
                     sa.column("authority_oid", sa.String))


def upgrade() -> None:
    with op.batch_alter_table("referral_patients") as batch:
        batch.add_column(sa.Column("authority_oid", sa.String(199), nullable=False,
                                   server_default=""))
    conn = op.get_bind()
    found = conn.execute(sa.select(_patients.c.authority).distinct()).scalars()
    for authority in sorted(a for a in found if a and _OID.fullmatch(a)):
        conn.execute(_patients.update().where(_patients.c.authority == authority)
                     .values(authority_oid=authority))


def downgrade() -> None:
    op.get_bind().execute(_patients.update().where(
        _patients.c.authority == "", _patients.c.authority_oid != "").values(
        authority=_patients.c.authority_oid))
    with op.batch_alter_table("referral_patients") as batch:
        batch.drop_column("authority_oid")
