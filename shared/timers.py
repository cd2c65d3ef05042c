"""Durable timers: deadlines that survive restarts and fire exactly once.

A timer is a row. The scheduler claims due rows with ``FOR UPDATE SKIP LOCKED``; in the same
transaction the timer's handler writes its event to the outbox and the row is marked fired. A
crash before commit leaves the timer due (it fires on restart); a commit leaves it fired (it
never fires again). A cancelled timer is never claimed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared import context
from shared.clock import Clock, SystemClock
from shared.context import TraceContext
from shared.db import Database
from shared.faults import fault_point
from shared.ids import uuid7
from shared.logging import get_logger
from shared.plumbing import Plumbing

log = get_logger(__name__)
TIMER_COLUMNS = ("id", "kind", "aggregate_id", "due_at", "payload", "correlation_id")


@dataclass(frozen=True)
class DueTimer:
    id: uuid.UUID
    kind: str
    aggregate_id: str
    due_at: datetime
    payload: dict[str, Any]


TimerHandler = Callable[[AsyncSession, DueTimer, datetime], Awaitable[None]]


class TimerDeferred(Exception):
    """Raised by a handler, before it has written anything, when the timer's aggregate is busy:
    locked by a request that may be about to settle or cancel this very timer. The timer stays
    due and is tried at the next poll.

    Waiting for the aggregate's lock instead would deadlock: the scheduler holds the timer row
    (claimed ``FOR UPDATE``) and waits for the aggregate, while the request holds the aggregate
    and waits for the timer row to cancel it.
    """


async def schedule(
    session: AsyncSession,
    plumbing: Plumbing,
    *,
    kind: str,
    aggregate_id: str,
    due_at: datetime,
    payload: dict[str, Any] | None = None,
) -> uuid.UUID:
    """Schedule a timer in the caller's transaction."""
    if due_at.tzinfo is None:
        raise ValueError("timer due_at must be timezone-aware")
    timer_id = uuid7()
    await session.execute(
        insert(plumbing.timers).values(
            id=timer_id,
            kind=kind,
            aggregate_id=aggregate_id,
            due_at=due_at,
            payload=payload or {},
            correlation_id=context.current().correlation_id,
        )
    )
    return timer_id


@dataclass(frozen=True)
class TimerRequest:
    kind: str
    aggregate_id: str
    due_at: datetime
    payload: dict[str, Any]


async def schedule_many(
    session: AsyncSession, plumbing: Plumbing, requests: list[TimerRequest]
) -> list[uuid.UUID]:
    """Schedule several timers in one statement, in the caller's transaction."""
    if any(request.due_at.tzinfo is None for request in requests):
        raise ValueError("timer due_at must be timezone-aware")
    if not requests:
        return []
    correlation_id = context.current().correlation_id
    ids = [uuid7() for _ in requests]
    rows: list[dict[str, object]] = [
        {
            "id": timer_id,
            "kind": request.kind,
            "aggregate_id": request.aggregate_id,
            "due_at": request.due_at,
            "payload": request.payload,
            "correlation_id": correlation_id,
        }
        for timer_id, request in zip(ids, requests, strict=True)
    ]
    await session.execute(insert(plumbing.timers).values(rows))
    return ids


def timer_rows(requests: list[TimerRequest]) -> list[list[Any]]:
    """Timers as row values (``TIMER_COLUMNS``) for a batch writer; call it in the requesting
    task, whose trace the timers carry."""
    if any(request.due_at.tzinfo is None for request in requests):
        raise ValueError("timer due_at must be timezone-aware")
    correlation_id = context.current().correlation_id
    return [
        [
            uuid7(),
            request.kind,
            request.aggregate_id,
            request.due_at,
            json.dumps(request.payload),
            correlation_id,
        ]
        for request in requests
    ]


async def cancel(
    session: AsyncSession, plumbing: Plumbing, *, kind: str, aggregate_id: str, now: datetime
) -> int:
    """Cancel the pending timers of ``kind`` for an aggregate; returns how many were cancelled."""
    timers = plumbing.timers
    result = await session.execute(
        update(timers)
        .where(timers.c.kind == kind)
        .where(timers.c.aggregate_id == aggregate_id)
        .where(timers.c.fired_at.is_(None))
        .where(timers.c.cancelled_at.is_(None))
        .values(cancelled_at=now)
        .returning(timers.c.id)
    )
    return len(result.all())


async def counts(session: AsyncSession, plumbing: Plumbing, now: datetime) -> tuple[int, int]:
    """(pending, overdue): timers not yet fired or cancelled, and those of them past due."""
    timers = plumbing.timers
    pending = (timers.c.fired_at.is_(None)) & (timers.c.cancelled_at.is_(None))
    result = await session.execute(
        select(
            func.count().filter(pending),
            func.count().filter(pending & (timers.c.due_at <= now)),
        ).select_from(timers)
    )
    row = result.one()
    return int(row[0]), int(row[1])


class TimerScheduler:
    """Fires one schema's due timers; several schedulers may run at once."""

    def __init__(
        self,
        database: Database,
        plumbing: Plumbing,
        handlers: dict[str, TimerHandler],
        *,
        clock: Clock | None = None,
        poll_interval: float = 1.0,
        batch_size: int = 100,
    ) -> None:
        self.database = database
        self.plumbing = plumbing
        self.handlers = handlers
        self.clock = clock or SystemClock()
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.fired_total = 0
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True

    async def run(self) -> None:
        while not self.stopping:
            try:
                fired = await self.fire_due()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database may be restarting; try again
                log.warning("timers.fire_failed", error=repr(error), schema=self.plumbing.schema)
                fired = 0
            if fired < self.batch_size:
                await asyncio.sleep(self.poll_interval)

    async def fire_due(self) -> int:
        """Fire every timer due now (one batch); returns how many fired."""
        timers = self.plumbing.timers
        now = self.clock.now()
        async with self.database.transaction() as session:
            result = await session.execute(
                select(timers)
                .where(timers.c.due_at <= now)
                .where(timers.c.fired_at.is_(None))
                .where(timers.c.cancelled_at.is_(None))
                .where(timers.c.kind.in_(list(self.handlers)))
                .order_by(timers.c.due_at)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
            rows = result.mappings().all()
            deferred = 0
            for row in rows:
                timer = DueTimer(
                    id=row["id"],
                    kind=row["kind"],
                    aggregate_id=row["aggregate_id"],
                    due_at=row["due_at"],
                    payload=dict(row["payload"]),
                )
                trace = TraceContext(
                    correlation_id=row["correlation_id"] or str(timer.id),
                    causation_id=f"timer:{timer.id}",
                    traceparent=context.new_traceparent(),
                )
                try:
                    with context.bound(trace):
                        await self.handlers[timer.kind](session, timer, now)
                except TimerDeferred:
                    deferred += 1
                    log.info("timer.deferred", kind=timer.kind, aggregate_id=timer.aggregate_id)
                    continue
                await session.execute(
                    update(timers).where(timers.c.id == timer.id).values(fired_at=now)
                )
                log.info("timer.fired", kind=timer.kind, aggregate_id=timer.aggregate_id)
            if rows:
                fault_point("timers.before_commit")
        fired = len(rows) - deferred
        self.fired_total += fired
        return fired  # below a full batch when some were deferred: they wait a poll
