"""Each service's migrations build exactly the schema its models describe (no drift)."""

from __future__ import annotations

from importlib import import_module
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from services.catalogue import MIGRATED


def _differences(connection: Any, metadata: MetaData) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "include_name": lambda name, kind, _: kind != "schema" or name == metadata.schema,
            "version_table_schema": metadata.schema,
            "compare_type": True,
        },
    )
    return [
        difference
        for difference in compare_metadata(context, metadata)
        if not (isinstance(difference, tuple) and "alembic_version" in str(difference))
    ]


@pytest.mark.parametrize("service", MIGRATED)
async def test_migrations_match_the_models(database_url: str, service: str) -> None:
    import_module("services.referrals.contacts.models")  # contacts share the referrals metadata
    metadata: MetaData = import_module(f"services.{service}.models").Base.metadata
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences, metadata)
    finally:
        await engine.dispose()
    assert differences == []
