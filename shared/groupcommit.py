"""Group commit: many concurrent requests' writes, one transaction and one WAL flush.

A durable commit costs a WAL flush (about 1 ms on this machine, far more on network storage),
so one transaction per request caps a service near a thousand writes a second however fast its
code is. A :class:`GroupCommit` queues the items that concurrent requests hand it; one writer
task takes everything queued so far (up to ``max_batch``), writes it in a single transaction
with set-based statements, commits once and then answers every request. While a batch commits
the next one fills, so batches grow with load and stay at one item when the service is idle
(no added latency: nothing waits for a timer).

Each request still gets its own outcome. When a batch fails, its items are written again one
per transaction, so one bad item fails alone and the others commit. When the connection itself
fails, the items of that batch fail with :class:`WriteUnavailable` (the client may retry; an
idempotency key makes that safe, because whether the lost COMMIT took effect is unknown).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import asyncpg

from shared.errors import DomainError
from shared.logging import get_logger

log = get_logger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

BatchWriter = Callable[[asyncpg.Connection, Sequence[Item]], Awaitable[Sequence[Result]]]

_CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)


class WriteUnavailable(DomainError):
    status_code = 503
    title = "The write could not be completed; retry with the same Idempotency-Key"


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit(Generic[Item, Result]):
    """Writes items from concurrent callers in shared transactions; see the module docstring.

    ``write_batch(connection, items)`` returns one result per item, in order, and must be
    correct for any number of items from one upwards. It runs inside a transaction, unless
    ``transaction=False``: for a writer whose whole batch is one statement (atomic by itself),
    which saves the BEGIN and COMMIT round trips.
    """

    def __init__(
        self,
        dsn: str,
        write_batch: BatchWriter[Item, Result],
        *,
        name: str,
        application_name: str = "threadline",
        max_batch: int = 256,
        transaction: bool = True,
    ) -> None:
        self.dsn = dsn
        self.write_batch = write_batch
        self.name = name
        self.application_name = application_name
        self.max_batch = max_batch
        self.transaction = transaction
        self._queue: list[_Pending[Item, Result]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connection: asyncpg.Connection | None = None
        self._stopping = False
        self.batches = 0
        self.items = 0
        self.largest_batch = 0

    async def submit(self, item: Item) -> Result:
        """Queue ``item`` and wait until its batch has committed (or failed)."""
        if self._stopping:
            raise WriteUnavailable("the service is shutting down")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"group-commit:{self.name}")
        pending: _Pending[Item, Result] = _Pending(item)
        self._queue.append(pending)
        self._wake.set()
        return await asyncio.shield(pending.future)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Write what is queued, then close; items still queued after the grace period fail."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=grace_seconds)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(WriteUnavailable("the service is shutting down"))
        self._queue.clear()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._connection.close(), timeout=5)
            self._connection = None

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            await self._write(batch)

    async def _connect(self) -> asyncpg.Connection:
        if self._connection is None or self._connection.is_closed():
            self._connection = await asyncpg.connect(
                self.dsn, server_settings={"application_name": self.application_name}
            )
        return self._connection

    async def _write(self, batch: list[_Pending[Item, Result]]) -> None:
        try:
            results = await self._transaction([pending.item for pending in batch])
        except _CONNECTION_ERRORS as error:
            self._drop_connection()
            log.warning("group_commit.connection_failed", name=self.name, error=repr(error))
            for pending in batch:
                _fail(pending, WriteUnavailable("the database connection failed mid-write"))
            return
        except Exception as error:
            if len(batch) == 1:
                _fail(batch[0], error)
                return
            # Find the bad item(s): every item again, alone, in its own transaction.
            log.info("group_commit.batch_split", name=self.name, size=len(batch), error=repr(error))
            for pending in batch:
                await self._write([pending])
            return
        self.batches += 1
        self.items += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    async def _transaction(self, items: list[Item]) -> Sequence[Result]:
        connection = await self._connect()
        if not self.transaction:
            results = await self.write_batch(connection, items)
        else:
            async with connection.transaction():
                results = await self.write_batch(connection, items)
                if len(results) != len(items):  # checked before COMMIT: a bug writes nothing
                    raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)}")
        if len(results) != len(items):
            raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)} items")
        return results

    def _drop_connection(self) -> None:
        if self._connection is not None:
            self._connection.terminate()
            self._connection = None


def _fail(pending: _Pending[Item, Result], error: BaseException) -> None:
    if not pending.future.done():
        pending.future.set_exception(error)
