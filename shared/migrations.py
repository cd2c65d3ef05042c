"""Alembic, one history per service, each in its own schema with its own version table."""

from __future__ import annotations

import asyncio
from importlib import import_module
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import service_metadata
from shared.plumbing import attach_plumbing


def alembic_config(service: str, database_url: str) -> Config:
    package = import_module(f"services.{service}")
    assert package.__file__ is not None
    migrations = Path(package.__file__).parent / "migrations"
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["service"] = service
    return config


def upgrade(service: str, database_url: str, revision: str = "head") -> None:
    """Bring one service's schema to ``revision``; safe to run again."""
    command.upgrade(alembic_config(service, database_url), revision)


def run_env(target_metadata: MetaData) -> None:
    """The body of every service's ``migrations/env.py`` (online mode, asyncpg)."""
    from alembic import context

    schema = target_metadata.schema
    assert schema, "service metadata must be bound to the service's schema"
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None

    def run(connection: Connection) -> None:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table="alembic_version",
            version_table_schema=schema,
            include_schemas=False,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                # Serialise concurrent `migrate` runs of the same service.
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                    {"key": f"migrate:{schema}"},
                )
                await connection.run_sync(run)
        finally:
            await engine.dispose()

    asyncio.run(main())


def name_outbox_constraint(connection: Connection, schema: str) -> None:
    """Give the outbox's unique constraint its conventional name where an early revision left
    PostgreSQL's default one (``outbox_event_id_key``)."""
    connection.execute(
        text(
            f"""
            DO $$ BEGIN
              IF EXISTS (SELECT 1 FROM pg_constraint c JOIN pg_namespace n
                         ON n.oid = c.connamespace
                         WHERE n.nspname = '{schema}' AND c.conname = 'outbox_event_id_key') THEN
                ALTER TABLE "{schema}".outbox
                  RENAME CONSTRAINT outbox_event_id_key TO uq_outbox_event_id;
              END IF;
            END $$;
            """
        )
    )


def create_plumbing_tables(connection: Connection, schema: str) -> None:
    """Create outbox, inbox and timers in ``schema`` (used by each service's first revision).

    A later change to these tables needs a new revision in every service.
    """
    metadata = service_metadata(schema)  # the services' naming convention, so names agree
    attach_plumbing(metadata)
    metadata.create_all(connection)
