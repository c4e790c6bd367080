"""The durable store: schema, migrations, connections and the group-commit writer (SQLAlchemy only here)."""
