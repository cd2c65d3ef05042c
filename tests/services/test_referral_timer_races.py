"""A deadline falling due while a MASH worker acts on the referral: the action wins, and
neither side deadlocks (found by `make chaos`: an acknowledgement racing the acknowledgement
timer failed with 500 "deadlock detected")."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from services.referrals import service
from services.referrals.app import create_app
from services.referrals.models import plumbing
from services.referrals.repository import ReferralRepository
from shared import timers
from shared.clock import ManualClock
from shared.db import Database
from tests.services.factories import referral_body
from tests.support.apps import referrals_settings, serving
from tests.support.tokens import MASH, SCHOOL

RECEIVED = datetime(2026, 4, 2, 13, 0, tzinfo=UTC)
OVERDUE = datetime(2026, 4, 8, 0, 0, tzinfo=UTC)  # acknowledgement and decision both late


@pytest.fixture
async def api(database_url: str, bootstrap: str) -> AsyncIterator[httpx.AsyncClient]:
    # The service's own scheduler lives at the time of receipt: only the test's fires.
    app = create_app(
        referrals_settings(database_url, bootstrap),
        clock=ManualClock(RECEIVED),
        configure_logs=False,
    )
    async with serving(app, headers=MASH) as client:
        yield client


async def events_of(database: Database, referral_id: str) -> list[str]:
    async with database.transaction() as session:
        rows = await session.execute(
            select(plumbing.outbox.c.event_type).where(
                plumbing.outbox.c.partition_key == referral_id
            )
        )
        return [row.event_type for row in rows]


async def test_a_timer_whose_referral_is_held_by_an_action_waits_for_it_without_deadlock(
    api: httpx.AsyncClient, database: Database
) -> None:
    busy = (await api.post("/v1/referrals", json=referral_body(), headers=SCHOOL)).json()["id"]
    idle = (await api.post("/v1/referrals", json=referral_body(), headers=SCHOOL)).json()["id"]
    scheduler = timers.TimerScheduler(
        database,
        plumbing,
        {service.DEADLINE_TIMER: service.deadline_missed},
        clock=ManualClock(OVERDUE),
    )

    # What an acknowledgement does, in its order: lock the referral, then cancel its timer.
    async with database.transaction() as action:
        referral = await ReferralRepository(action).get(uuid.UUID(busy), for_update=True)
        assert referral is not None
        acknowledgement = next(d for d in referral.deadlines if d.kind == "acknowledgement")
        firing = asyncio.create_task(scheduler.fire_due())
        await asyncio.sleep(0.5)  # the scheduler has claimed every due timer by now
        cancelled = await timers.cancel(
            action,
            plumbing,
            kind=service.DEADLINE_TIMER,
            aggregate_id=str(acknowledgement.id),
            now=OVERDUE,
        )
    fired = await asyncio.wait_for(firing, timeout=10)

    assert cancelled == 1
    assert fired >= 2  # the other referral's two deadlines were not held up
    assert (await events_of(database, idle)).count("referral.ack_overdue") == 1
    assert "referral.ack_overdue" not in await events_of(database, busy)

    # Released, the busy referral's other deadline fires at the next poll; the cancelled not.
    await scheduler.fire_due()
    busy_events = await events_of(database, busy)
    assert busy_events.count("referral.decision_overdue") == 1
    assert "referral.ack_overdue" not in busy_events
