"""Alembic migrations for the engine's schema."""
