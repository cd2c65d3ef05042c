"""Alembic history of this service (its own version table in its own schema)."""
