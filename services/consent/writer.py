"""Group commit: every ledger write of this process goes through one writer that batches
concurrent commands into one transaction.

Appends serialise on the chain head, so a transaction per request would be a queue of
one-millisecond commits. Instead each request submits a command and awaits its future; the writer
takes everything waiting (up to ``max_batch``), runs the commands in order in one transaction that
holds the chain lock, commits once and answers them all. A request's answer is therefore decided
in the very transaction that records it, and is given only after that transaction committed.

Several processes each run a writer; the chain lock (an advisory lock taken inside the
transaction) orders their batches, so the chain stays one line across replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.consent.decision import ConsentView
from services.consent.ledger import Chain, driver_connection
from services.consent.models import ConsentRecord
from shared.consumer import is_transient
from shared.db import Database
from shared.errors import DomainError
from shared.logging import get_logger

log = get_logger(__name__)


PREFETCH_SQL = (
    "SELECT id, subject_id, grantor_kind, child_competent, status, data_categories, recipients, "
    "purposes, obtained_at, expires_at, withdrawn_at FROM consent.consent_records "
    "WHERE subject_id = ANY($1::uuid[])"
)


def view_of(record: ConsentRecord) -> ConsentView:
    return ConsentView(
        id=record.id,
        subject_id=record.subject_id,
        grantor_kind=record.grantor_kind,
        child_competent=record.child_competent,
        status=record.status,
        data_categories=tuple(record.data_categories),
        recipients=tuple(record.recipients),
        purposes=tuple(record.purposes),
        obtained_at=record.obtained_at,
        expires_at=record.expires_at,
        withdrawn_at=record.withdrawn_at,
    )


@dataclass
class Batch:
    """What the commands of one transaction share: the session, the chain head, the time, and
    what the decisions need of their subjects' consent records (loaded once for the batch, and
    kept current as commands of the batch record or withdraw consents)."""

    session: AsyncSession
    chain: Chain
    now: datetime
    _consents: dict[UUID, list[ConsentView]] = field(default_factory=dict)

    def seed(self, subject_ids: Iterable[UUID], rows: Iterable[Row[Any]]) -> None:
        """The consent records of ``subject_ids``, read with the chain lock (``Chain.lock``)."""
        for subject in subject_ids:
            self._consents.setdefault(subject, [])
        self._add(row._mapping for row in rows)

    async def prefetch(self, subject_ids: Iterable[UUID]) -> None:
        missing = list({subject for subject in subject_ids if subject not in self._consents})
        if not missing:
            return
        for subject in missing:
            self._consents[subject] = []
        raw = await driver_connection(self.session)
        self._add(await raw.fetch(PREFETCH_SQL, missing))

    def _add(self, rows: Iterable[Mapping[Any, Any]]) -> None:
        for row in rows:
            self._consents[row["subject_id"]].append(
                ConsentView(
                    id=row["id"],
                    subject_id=row["subject_id"],
                    grantor_kind=row["grantor_kind"],
                    child_competent=row["child_competent"],
                    status=row["status"],
                    data_categories=tuple(row["data_categories"]),
                    recipients=tuple(row["recipients"]),
                    purposes=tuple(row["purposes"]),
                    obtained_at=row["obtained_at"],
                    expires_at=row["expires_at"],
                    withdrawn_at=row["withdrawn_at"],
                )
            )

    def held(self, subject_ids: Iterable[UUID]) -> dict[UUID, list[ConsentView]] | None:
        """The consent records of ``subject_ids`` if all were loaded (as a batch's declared
        subjects are), without a call per subject; None if any was not."""
        consents = self._consents
        try:
            return {subject: consents[subject] for subject in subject_ids}
        except KeyError:
            return None

    async def consents_of(self, subject_id: UUID) -> list[ConsentView]:
        await self.prefetch([subject_id])
        return self._consents[subject_id]

    def remember(self, record: ConsentRecord) -> None:
        """A record added or changed in this batch: later commands of the batch see it."""
        views = self._consents.get(record.subject_id)
        if views is None:
            return
        views[:] = [view for view in views if view.id != record.id]
        views.append(view_of(record))


class Command(Protocol):
    def subjects(self) -> Iterable[UUID]:
        """The subjects whose consent records the command reads (prefetched for the batch)."""
        ...

    async def execute(self, batch: Batch) -> Any:
        """Do the work. A ``DomainError`` must be raised before anything is written."""
        ...


async def run_batch(
    session: AsyncSession,
    commands: list[Command],
    now: datetime,
    locked: Callable[[], None] | None = None,
) -> list[Any]:
    """Run ``commands`` in order in the caller's transaction; a command refused with a domain
    error gets the error as its result and the others go on. ``locked`` is called once the
    chain lock is held."""
    subjects = {subject for command in commands for subject in command.subjects()}
    # The lock is held from here to COMMIT; each round trip inside it is time no other
    # process's writer can append, so the lock, the head and the consents come in one.
    chain, consents = await Chain.lock(session, now, subjects)
    if locked is not None:
        locked()
    batch = Batch(session=session, chain=chain, now=now)
    batch.seed(subjects, consents)
    results: list[Any] = []
    for command in commands:
        try:
            results.append(await command.execute(batch))
        except DomainError as error:
            results.append(error)
    await chain.flush()
    await session.flush()
    return results


class WriterStopped(DomainError):
    status_code = 503
    title = "Service unavailable"


class LedgerWriter:
    """One per process: batches ledger commands into group commits."""

    def __init__(
        self, database: Database, now: Callable[[], datetime], *, max_batch: int = 500
    ) -> None:
        self.database = database
        self.now = now
        self.max_batch = max_batch
        # None is the stop sentinel: everything queued before it is committed first.
        self._queue: asyncio.Queue[tuple[Command, asyncio.Future[Any]] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # Set except while this writer holds the chain lock (see ``turn``).
        self._unlocked = asyncio.Event()
        self._unlocked.set()
        self.batches = 0
        self.commands = 0

    async def turn(self) -> None:
        """Wait, if this writer holds the chain lock, until it has committed.

        The lock is held from its grant to COMMIT, and no other process's writer can append
        meanwhile. Each round trip inside that window resumes only when this process's event
        loop gets to it, and requests being parsed, authenticated and validated queue ahead of
        it: with two workers under load, the window stretched to ~9 ms for a batch of 22, most
        of it other requests' work, while the other worker sat waiting for the lock. New
        requests therefore wait here (a few milliseconds at most) and are handled while the
        writer waits for the lock instead: the lock holder goes first."""
        if not self._unlocked.is_set():
            await self._unlocked.wait()

    async def submit(self, command: Command) -> Any:
        """Run ``command`` in the next group commit; returns its result once committed."""
        if self._stopping:
            raise WriterStopped("the consent service is stopping; retry")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger-writer")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((command, future))
        return await future

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                return
            items = [first]
            while len(items) < self.max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                items.append(item)
            await self._commit(items)

    async def _commit(self, items: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        try:
            results = await self._transaction(items)
        except Exception as error:
            if len(items) == 1:
                _, future = items[0]
                if not future.done():
                    future.set_exception(error)
                return
            # One command broke the transaction: run each alone so only that one fails.
            log.warning("ledger.batch_failed", size=len(items), error=repr(error))
            for item in items:
                await self._commit([item])
            return
        self.batches += 1
        self.commands += len(items)
        for (_, future), result in zip(items, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _transaction(self, items: list[tuple[Command, asyncio.Future[Any]]]) -> list[Any]:
        """One group commit; once more on a fresh connection if the connection broke (the pool
        does not ping, so a connection the database dropped is found here)."""
        for attempt in (1, 2):
            try:
                async with self.database.transaction() as session:
                    return await run_batch(
                        session,
                        [command for command, _ in items],
                        self.now(),
                        locked=self._unlocked.clear,
                    )
            except Exception as error:
                if attempt == 2 or not is_transient(error):
                    raise
                log.warning("ledger.batch_retried", error=repr(error))
            finally:
                self._unlocked.set()
        raise AssertionError("unreachable")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        self._stopping = True
        if self._task is None:
            return
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
        except TimeoutError:
            log.error("ledger.writer_stop_timeout")
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
