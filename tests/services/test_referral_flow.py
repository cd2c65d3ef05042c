"""The proving slice, end to end on real Kafka and PostgreSQL: a referral reaches the MASH inbox;
an acknowledgement closes it; a missed deadline becomes an escalation for the manager."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from services.notifications.app import create_app as create_notifications
from services.notifications.models import InboxItem
from services.referrals.app import create_app as create_referrals
from services.referrals.models import plumbing as referrals_plumbing
from shared.clock import ManualClock
from shared.db import Database
from tests.services.factories import referral_body
from tests.support.apps import notifications_settings, referrals_settings, serving
from tests.support.kafka import eventually
from tests.support.tokens import MASH, SCHOOL

# Monday 9 November 2026, 10:00 GMT: the deadline is the end of Tuesday 10 November.
MONDAY = datetime(2026, 11, 9, 10, 0, tzinfo=UTC)
DUE = datetime(2026, 11, 11, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(MONDAY)


@pytest.fixture
async def services(
    database_url: str, bootstrap: str, clock: ManualClock
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    referrals = create_referrals(
        referrals_settings(database_url, bootstrap), clock=clock, configure_logs=False
    )
    notifications = create_notifications(
        notifications_settings(database_url, bootstrap), configure_logs=False
    )
    async with (
        serving(referrals, headers=SCHOOL) as referrals_api,
        serving(notifications, headers=MASH) as inbox_api,
    ):
        yield referrals_api, inbox_api


async def inbox_for(api: httpx.AsyncClient, referral_id: str) -> list[dict]:
    response = await api.get("/v1/inbox", params={"referral_id": referral_id})
    assert response.status_code == 200
    return list(response.json()["items"])


async def test_a_referral_reaches_the_mash_inbox_and_acknowledging_closes_it(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient], database: Database
) -> None:
    referrals_api, inbox_api = services
    correlation_id = f"agency-request-{uuid.uuid4()}"
    posted = await referrals_api.post(
        "/v1/referrals", json=referral_body(), headers={"X-Correlation-ID": correlation_id}
    )
    assert posted.status_code == 201
    assert posted.headers["x-correlation-id"] == correlation_id
    referral = posted.json()

    async def arrived() -> list[dict]:
        return await inbox_for(inbox_api, referral["id"])

    await eventually(arrived)
    [item] = await arrived()
    assert item["kind"] == "new_referral"
    assert item["audience"] == "mash_worker"
    assert item["status"] == "open"
    assert item["title"] == f"New referral {referral['reference']} about 2 children"
    assert "end of Tuesday 10 November 2026" in item["body"]
    assert item["due_at"] == "2026-11-11T00:00:00Z"

    # The correlation id of the agency's request followed the event into the consumer's work.
    async with database.transaction() as session:
        stored = await session.scalar(
            select(InboxItem.correlation_id).where(InboxItem.id == uuid.UUID(item["id"]))
        )
    assert stored == correlation_id

    acked = await referrals_api.post(
        f"/v1/referrals/{referral['id']}/acknowledge",
        json={"acknowledged_by": "Sam, MASH"},
        headers=MASH,
    )
    assert acked.status_code == 200

    async def closed() -> bool:
        return all(i["status"] == "done" for i in await arrived())

    await eventually(closed)


async def test_a_missed_acknowledgement_deadline_escalates_to_the_mash_manager(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient], clock: ManualClock
) -> None:
    referrals_api, inbox_api = services
    referral = (await referrals_api.post("/v1/referrals", json=referral_body())).json()
    assert referral["acknowledgement_due_at"] == "2026-11-11T00:00:00Z"

    async def items() -> list[dict]:
        return await inbox_for(inbox_api, referral["id"])

    await eventually(items)
    clock.set(DUE + timedelta(minutes=1))  # nobody acknowledged by the end of Tuesday

    async def escalated() -> list[dict]:
        return [i for i in await items() if i["kind"] == "acknowledgement_overdue"]

    await eventually(escalated)
    [escalation] = await escalated()
    assert escalation["audience"] == "mash_manager"
    assert escalation["title"] == (
        f"Escalation: referral {referral['reference']} not acknowledged in time"
    )
    assert "end of Tuesday 10 November 2026" in escalation["body"]

    # Acknowledging late closes both the referral item and the escalation.
    acked = await referrals_api.post(
        f"/v1/referrals/{referral['id']}/acknowledge",
        json={"acknowledged_by": "Duty manager"},
        headers=MASH,
    )
    assert acked.status_code == 200

    async def all_closed() -> bool:
        return all(i["status"] == "done" for i in await items())

    await eventually(all_closed)


async def test_an_acknowledgement_in_time_means_no_escalation(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient],
    clock: ManualClock,
    database: Database,
) -> None:
    referrals_api, inbox_api = services
    referral = (await referrals_api.post("/v1/referrals", json=referral_body())).json()
    await referrals_api.post(
        f"/v1/referrals/{referral['id']}/acknowledge",
        json={"acknowledged_by": "Sam, MASH"},
        headers=MASH,
    )
    clock.set(DUE + timedelta(days=7))
    await asyncio.sleep(1.0)  # five scheduler polls with the clock a week past the deadline

    async def timer_settled() -> bool:
        async with database.transaction() as session:
            row = (
                await session.execute(
                    select(
                        referrals_plumbing.timers.c.fired_at,
                        referrals_plumbing.timers.c.cancelled_at,
                    ).where(referrals_plumbing.timers.c.aggregate_id == referral["id"])
                )
            ).one()
        return row.cancelled_at is not None and row.fired_at is None

    await eventually(timer_settled)

    async def referral_item_done() -> bool:
        found = await inbox_for(inbox_api, referral["id"])
        return bool(found) and all(i["status"] == "done" for i in found)

    await eventually(referral_item_done)
    assert [i["kind"] for i in await inbox_for(inbox_api, referral["id"])] == ["new_referral"]
