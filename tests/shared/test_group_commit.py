"""Group commit: concurrent callers share transactions, yet each gets its own outcome."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from shared.db import asyncpg_dsn
from shared.groupcommit import BatchWriter, GroupCommit, WriteUnavailable

TABLE = '"plumbing_test"."group_commit_probe"'


@pytest.fixture
async def dsn(database_url: str) -> AsyncIterator[str]:
    dsn = asyncpg_dsn(database_url)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} "
            "(run text, n int, value text CHECK (value <> 'bad'), PRIMARY KEY (run, n))"
        )
        yield dsn
    finally:
        await connection.close()


async def stored(dsn: str, run: str) -> list[int]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(f"SELECT n FROM {TABLE} WHERE run = $1 ORDER BY n", run)
        return [row[0] for row in rows]
    finally:
        await connection.close()


def writer(run: str) -> BatchWriter[tuple[int, str], int]:
    async def write(connection: asyncpg.Connection, items: Sequence[tuple[int, str]]) -> list[int]:
        await connection.executemany(
            f"INSERT INTO {TABLE} (run, n, value) VALUES ($1, $2, $3)",
            [(run, n, value) for n, value in items],
        )
        return [n * 10 for n, _ in items]

    return write


async def test_concurrent_items_share_transactions_and_each_gets_its_result(dsn: str) -> None:
    run = uuid.uuid4().hex
    commit: GroupCommit[tuple[int, str], int] = GroupCommit(dsn, writer(run), name="probe")
    try:
        results = await asyncio.gather(*(commit.submit((n, "ok")) for n in range(200)))
    finally:
        await commit.stop()
    assert results == [n * 10 for n in range(200)]
    assert await stored(dsn, run) == list(range(200))
    assert commit.items == 200
    assert commit.batches < 20  # grouped: 200 concurrent items, far fewer commits
    assert commit.largest_batch > 10


async def test_one_bad_item_fails_alone_and_the_rest_of_its_batch_commits(dsn: str) -> None:
    run = uuid.uuid4().hex
    commit: GroupCommit[tuple[int, str], int] = GroupCommit(dsn, writer(run), name="probe")
    try:
        outcomes = await asyncio.gather(
            *(commit.submit((n, "bad" if n == 7 else "ok")) for n in range(30)),
            return_exceptions=True,
        )
    finally:
        await commit.stop()
    assert isinstance(outcomes[7], asyncpg.CheckViolationError)
    assert [o for i, o in enumerate(outcomes) if i != 7] == [n * 10 for n in range(30) if n != 7]
    assert await stored(dsn, run) == [n for n in range(30) if n != 7]


async def test_a_lost_connection_fails_its_batch_as_retryable_and_the_next_write_reconnects(
    dsn: str,
) -> None:
    run = uuid.uuid4().hex
    killed = asyncio.Event()

    async def write(connection: asyncpg.Connection, items: Sequence[tuple[int, str]]) -> list[int]:
        if not killed.is_set():
            killed.set()
            admin = await asyncpg.connect(dsn)
            try:
                await admin.execute("SELECT pg_terminate_backend($1)", connection.get_server_pid())
            finally:
                await admin.close()
        await connection.executemany(
            f"INSERT INTO {TABLE} (run, n, value) VALUES ($1, $2, $3)",
            [(run, n, value) for n, value in items],
        )
        return [n for n, _ in items]

    commit: GroupCommit[tuple[int, str], int] = GroupCommit(dsn, write, name="probe")
    try:
        with pytest.raises(WriteUnavailable):
            await commit.submit((1, "ok"))
        assert await commit.submit((2, "ok")) == 2
    finally:
        await commit.stop()
    assert await stored(dsn, run) == [2]


async def test_stop_writes_what_is_queued_and_refuses_what_comes_after(dsn: str) -> None:
    run = uuid.uuid4().hex
    commit: GroupCommit[tuple[int, str], int] = GroupCommit(dsn, writer(run), name="probe")
    pending = [asyncio.create_task(commit.submit((n, "ok"))) for n in range(50)]
    await asyncio.sleep(0)  # queued, not yet written
    await commit.stop()
    assert [await task for task in pending] == [n * 10 for n in range(50)]
    with pytest.raises(WriteUnavailable):
        await commit.submit((99, "ok"))
    assert await stored(dsn, run) == list(range(50))
