"""Durable timers: a deadline that passes while nothing is running fires exactly once when the
scheduler comes back; racing schedulers never double-fire; a cancelled timer never fires."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from shared import timers
from shared.clock import ManualClock
from shared.db import Database
from shared.timers import TimerScheduler
from tests.support.plumbing import new_run_id, plumbing, probe_timer_handler
from tests.support.processes import Worker

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def probe_events(database: Database, run_id: str) -> int:
    """How many events the timers of ``run_id`` wrote to the outbox."""
    async with database.transaction() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(plumbing.outbox)
                .where(plumbing.outbox.c.partition_key == run_id)
            )
        )


async def schedule(database: Database, kind: str, due_at: datetime, count: int = 1) -> None:
    async with database.transaction() as session:
        for sequence in range(count):
            await timers.schedule(
                session,
                plumbing,
                kind=kind,
                aggregate_id=f"aggregate-{sequence}",
                due_at=due_at,
                payload={"sequence": sequence},
            )


async def test_a_timer_due_while_the_scheduler_was_down_fires_once_when_it_returns(
    database: Database,
) -> None:
    run_id, clock = new_run_id(), ManualClock(START)
    kind = f"probe.{run_id}"
    await schedule(database, kind, START + timedelta(hours=1))

    # Nothing runs while the deadline passes.
    clock.advance(timedelta(days=3))
    scheduler = TimerScheduler(database, plumbing, {kind: probe_timer_handler(run_id)}, clock=clock)
    assert await scheduler.fire_due() == 1
    assert await scheduler.fire_due() == 0
    assert await probe_events(database, run_id) == 1


async def test_a_timer_does_not_fire_before_it_is_due(database: Database) -> None:
    run_id, clock = new_run_id(), ManualClock(START)
    kind = f"probe.{run_id}"
    await schedule(database, kind, START + timedelta(minutes=5))
    scheduler = TimerScheduler(database, plumbing, {kind: probe_timer_handler(run_id)}, clock=clock)
    clock.advance(timedelta(minutes=4, seconds=59))
    assert await scheduler.fire_due() == 0
    clock.advance(timedelta(seconds=1))
    assert await scheduler.fire_due() == 1


async def test_racing_schedulers_fire_each_timer_exactly_once(database: Database) -> None:
    run_id, clock = new_run_id(), ManualClock(START)
    kind = f"probe.{run_id}"
    await schedule(database, kind, START, count=60)
    handlers = {kind: probe_timer_handler(run_id)}
    schedulers = [
        TimerScheduler(database, plumbing, handlers, clock=clock, batch_size=7) for _ in range(3)
    ]
    fired = 0
    for _ in range(20):
        fired += sum(await asyncio.gather(*(s.fire_due() for s in schedulers)))
    assert fired == 60
    assert await probe_events(database, run_id) == 60


async def test_a_cancelled_timer_never_fires(database: Database) -> None:
    run_id, clock = new_run_id(), ManualClock(START)
    kind = f"probe.{run_id}"
    await schedule(database, kind, START + timedelta(hours=1))
    async with database.transaction() as session:
        cancelled = await timers.cancel(
            session, plumbing, kind=kind, aggregate_id="aggregate-0", now=clock.now()
        )
    assert cancelled == 1
    clock.advance(timedelta(days=30))
    scheduler = TimerScheduler(database, plumbing, {kind: probe_timer_handler(run_id)}, clock=clock)
    assert await scheduler.fire_due() == 0
    assert await probe_events(database, run_id) == 0
    async with database.transaction() as session:
        # Cancelling again, or after the fact, changes nothing.
        assert (
            await timers.cancel(
                session, plumbing, kind=kind, aggregate_id="aggregate-0", now=clock.now()
            )
            == 0
        )


async def test_a_scheduler_killed_before_commit_fires_the_timer_once_on_restart(
    database: Database, worker_env: dict[str, str], tmp_path
) -> None:
    run_id = new_run_id()
    kind = f"probe.{run_id}"
    await schedule(database, kind, datetime.now(UTC) - timedelta(minutes=1))
    args = ["timers", "--kind", kind, "--run-id", run_id]

    crashing = Worker(
        args, {**worker_env, "THREADLINE_FAULTS": "timers.before_commit"}, tmp_path / "t1.log"
    )
    assert await asyncio.to_thread(crashing.wait, 60) == -signal.SIGKILL, crashing.output()
    assert await probe_events(database, run_id) == 0  # the kill rolled the firing back

    with Worker(args, worker_env, tmp_path / "t2.log"):
        for _ in range(100):
            if await probe_events(database, run_id):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # a second firing would show up by now
    assert await probe_events(database, run_id) == 1


async def test_pending_and_overdue_counts(database: Database) -> None:
    run_id = new_run_id()
    kind = f"probe.{run_id}"
    now = datetime.now(UTC)
    async with database.transaction() as session:
        pending_before, overdue_before = await timers.counts(session, plumbing, now)
    await schedule(database, kind, now - timedelta(hours=1), count=2)
    await schedule(database, kind, now + timedelta(hours=1), count=1)
    async with database.transaction() as session:
        pending, overdue = await timers.counts(session, plumbing, now)
    assert (pending - pending_before, overdue - overdue_before) == (3, 2)
    # Fire them so later tests start clean.
    scheduler = TimerScheduler(
        database,
        plumbing,
        {kind: probe_timer_handler(run_id)},
        clock=ManualClock(now + timedelta(hours=2)),
    )
    assert await scheduler.fire_due() == 3
