"""Database engine and transaction scopes.

The request (or message, or timer tick) scope opens the transaction and commits it; services and
repositories only ``flush()``. This is what lets a state change and its outbox event commit as one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from sqlalchemy import MetaData, Table, bindparam, text
from sqlalchemy.dialects.postgresql import Insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def prebuilt_insert(table: Table, columns: Sequence[str] | None = None) -> Insert:
    """An INSERT of one row whose every value (of ``columns``, or of every column) is a bind
    parameter named after its column. Built once at import, it spares each call, and each row
    of an executemany, the building and cache-key work of a fresh statement; add ON CONFLICT
    and RETURNING to it as needed."""
    chosen = table.columns if columns is None else [table.c[name] for name in columns]
    return pg_insert(table).values({c.name: bindparam(c.name, type_=c.type) for c in chosen})


def service_metadata(schema: str) -> MetaData:
    """The metadata of one service's own schema."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy URL as a plain libpq/asyncpg DSN (for LISTEN connections and tools)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class Database:
    """One engine per process and service; sessions are opened per unit of work."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        application_name: str = "threadline",
        role: str | None = None,
        pre_ping: bool = True,
    ):
        """``role``: a (NOLOGIN) role every connection assumes at startup, so the process runs
        with that role's privileges even when it logs in as a more powerful user.
        ``pre_ping``: test each connection as it leaves the pool (one round trip more per
        transaction; a hot path that retries a failed transaction itself can turn it off)."""
        self.url = url
        server_settings = {"application_name": application_name}
        if role is not None:
            server_settings["role"] = role
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=pre_ping,
            connect_args={"server_settings": server_settings},
        )
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
