"""The test stack: a real PostgreSQL and a real Kafka, started once per session on their own
ports and data directories (``var/test``), so tests never touch the development stack."""

from __future__ import annotations

import asyncio
import fcntl
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from deploy.local.stack import REPO_ROOT, Stack
from services.catalogue import MIGRATED, load_events
from shared.db import Database
from shared.kafka import ensure_topics
from shared.migrations import upgrade
from tests.support import plumbing as test_plumbing

load_events()


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


async def _create_test_schema(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql(
                f'CREATE SCHEMA IF NOT EXISTS "{test_plumbing.SCHEMA}"'
            )
            await connection.run_sync(test_plumbing.metadata.create_all)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    stack = Stack.isolated("test", base_port=_port("THREADLINE_TEST_PORT_BASE", 24330))
    # One test session at a time per set of ports, whichever checkout it runs from: a second
    # `pytest` waits here rather than taking the first one's database and broker from under it.
    lock_path = Path(tempfile.gettempdir(), f"threadline-test-stack-{stack.pg_port}.lock")
    lock = lock_path.open("w")  # held for the whole session, closed below
    fcntl.flock(lock, fcntl.LOCK_EX)
    stack.wipe()
    stack.start_infrastructure()
    try:
        for service in MIGRATED:
            upgrade(service, stack.database_url)
        asyncio.run(_create_test_schema(stack.database_url))
        asyncio.run(ensure_topics(stack.kafka.bootstrap_servers))
        asyncio.run(ensure_topics(stack.kafka.bootstrap_servers, [test_plumbing.TEST_TOPIC]))
        yield stack
    finally:
        stack.stop_infrastructure()
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


@pytest.fixture(scope="session")
def database_url(stack: Stack) -> str:
    return stack.database_url


@pytest.fixture(scope="session")
def bootstrap(stack: Stack) -> str:
    return stack.kafka.bootstrap_servers


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest.fixture
def worker_env(database_url: str, bootstrap: str) -> dict[str, str]:
    """The environment for subprocess workers of the test stack."""
    return {
        **os.environ,
        "THREADLINE_DATABASE_URL": database_url,
        "THREADLINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PYTHONPATH": str(REPO_ROOT),
    }


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
