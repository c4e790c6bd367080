"""The durable store: schema, migrations, connections and the group-commit writer (SQLAlchemy only here).

Code outside the store holds a database as a `Database` and a transaction as a `Connection`
(both SQLAlchemy's, named here so that nothing else imports SQLAlchemy): it opens a
transaction with `db.begin()` and passes the connection to the store's functions, which own
every query.
"""

from sqlalchemy import Connection
from sqlalchemy import Engine as Database

__all__ = ["Connection", "Database"]
