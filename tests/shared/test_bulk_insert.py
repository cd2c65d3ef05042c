"""bulk_insert: a batch of rows in one statement, with the columns' own checks intact."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from services.referrals.models import Referral
from shared.db import asyncpg_dsn, bulk_insert, bulk_insert_sql
from tests.support.plumbing import plumbing

COLUMNS = ("id", "kind", "aggregate_id", "due_at", "payload", "correlation_id")


def timer(kind: str) -> list[object]:
    return [uuid.uuid4(), kind, "bulk", datetime.now(UTC), json.dumps({"a": 1}), None]


async def test_rows_go_in_together_and_an_over_long_value_is_refused_not_truncated(
    database_url: str,
) -> None:
    sql = bulk_insert_sql(plumbing.timers, COLUMNS)
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = [timer("bulk.test") for _ in range(3)]
        await bulk_insert(connection, sql, rows)
        stored = await connection.fetch(
            'SELECT id, payload FROM "plumbing_test".timers WHERE id = ANY($1::uuid[])',
            [row[0] for row in rows],
        )
        assert {row["id"] for row in stored} == {row[0] for row in rows}
        assert {json.loads(row["payload"])["a"] for row in stored} == {1}

        with pytest.raises(asyncpg.StringDataRightTruncationError):
            await bulk_insert(connection, sql, [timer("k" * 101)])  # kind is varchar(100)
        await bulk_insert(connection, sql, [])  # nothing to write: no statement
    finally:
        await connection.close()


def test_an_array_column_is_refused_because_unnest_would_flatten_it() -> None:
    with pytest.raises(ValueError, match="concern_categories"):
        bulk_insert_sql(Referral.__table__, ["id", "concern_categories"])  # type: ignore[arg-type]
