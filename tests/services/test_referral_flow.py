"""The proving slice, end to end on real Kafka and PostgreSQL: a referral reaches the MASH inbox;
an acknowledgement closes it; a missed deadline becomes an escalation for the manager."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from services.notifications.app import create_app as create_notifications
from services.notifications.models import InboxItem
from services.referrals.app import create_app as create_referrals
from services.referrals.models import plumbing as referrals_plumbing
from shared.clock import ManualClock
from shared.db import Database
from tests.services.consent_support import consent_app, decision_point
from tests.services.factories import referral_body
from tests.support.apps import notifications_settings, referrals_settings, serving
from tests.support.kafka import eventually
from tests.support.tokens import MASH, SCHOOL, bearer

# Monday 9 November 2026, 10:00 GMT: the deadline is the end of Tuesday 10 November.
MONDAY = datetime(2026, 11, 9, 10, 0, tzinfo=UTC)
DUE = datetime(2026, 11, 11, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(MONDAY)


@pytest.fixture
async def services(
    database_url: str, bootstrap: str, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    notifications = create_notifications(
        notifications_settings(database_url, bootstrap), configure_logs=False
    )
    async with serving(consent_app(database_url, bootstrap, tmp_path)) as consent_api:
        referrals = create_referrals(
            referrals_settings(database_url, bootstrap),
            clock=clock,
            configure_logs=False,
            decide=decision_point(consent_api),
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
    [told] = [i for i in await items() if i["kind"] == "referrer_may_chase:acknowledgement"]
    assert (told["audience"], told["organisation_code"]) == ("referrer", "100001")
    assert "an acknowledgement that your referral was received" in told["body"]

    # Acknowledging late closes both the referral item and the acknowledgement escalation
    # (the decision, due at the same time, has its own escalation, closed by deciding).
    acked = await referrals_api.post(
        f"/v1/referrals/{referral['id']}/acknowledge",
        json={"acknowledged_by": "Duty manager"},
        headers=MASH,
    )
    assert acked.status_code == 200

    async def acknowledgement_items_closed() -> bool:
        return all(
            i["status"] == "done"
            for i in await items()
            if i["kind"]
            in ("new_referral", "acknowledgement_overdue", "referrer_may_chase:acknowledgement")
        )

    await eventually(acknowledgement_items_closed)


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

    async with database.transaction() as session:
        row = (
            await session.execute(
                select(
                    referrals_plumbing.timers.c.fired_at,
                    referrals_plumbing.timers.c.cancelled_at,
                )
                .where(referrals_plumbing.timers.c.payload["referral_id"].astext == referral["id"])
                .where(referrals_plumbing.timers.c.payload["kind"].astext == "acknowledgement")
            )
        ).one()
    assert row.cancelled_at is not None and row.fired_at is None

    async def referral_item_done() -> bool:
        found = [
            i for i in await inbox_for(inbox_api, referral["id"]) if i["kind"] == "new_referral"
        ]
        return bool(found) and all(i["status"] == "done" for i in found)

    await eventually(referral_item_done)
    kinds = [i["kind"] for i in await inbox_for(inbox_api, referral["id"])]
    assert "acknowledgement_overdue" not in kinds and "new_referral" in kinds


async def test_missed_feedback_escalates_and_tells_only_that_referrer_they_may_chase(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient], clock: ManualClock
) -> None:
    referrals_api, inbox_api = services
    referral = (await referrals_api.post("/v1/referrals", json=referral_body())).json()
    rid = referral["id"]
    # Decided in time, but nobody told the school: feedback was due by the end of Thursday
    # 12 November (three working days after Monday 9 November).
    decided = await referrals_api.post(
        f"/v1/referrals/{rid}/decision",
        json={"decision": "early_help", "reason": "Family agree.", "decided_by": "Ali"},
        headers=MASH,
    )
    assert decided.status_code == 200
    clock.set(datetime(2026, 11, 13, 9, 0, tzinfo=UTC))

    school = bearer(audience=["threadline:referrals", "threadline:notifications"])
    other_school = bearer(
        organisation="100002", audience=["threadline:referrals", "threadline:notifications"]
    )

    async def referrer_items(headers: dict[str, str]) -> list[dict]:
        response = await inbox_api.get("/v1/inbox", params={"referral_id": rid}, headers=headers)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    async def chased() -> list[dict]:
        return [
            i for i in await referrer_items(school) if i["kind"] == "referrer_may_chase:feedback"
        ]

    await eventually(chased)
    [prompt] = await chased()
    assert prompt["audience"] == "referrer" and prompt["organisation_code"] == "100001"
    assert "feedback on what action is being taken" in prompt["body"]
    assert "end of Thursday 12 November 2026" in prompt["body"]
    assert referral["reference"] in prompt["body"] and "follow this up" in prompt["body"]
    assert await referrer_items(other_school) == []
    # The referrer sees only its own items, never the MASH's work queue.
    assert {i["audience"] for i in await referrer_items(school)} == {"referrer"}
    manager = [i for i in await inbox_for(inbox_api, rid) if i["kind"] == "feedback_overdue"]
    assert manager and manager[0]["audience"] == "mash_manager"

    given = await referrals_api.post(
        f"/v1/referrals/{rid}/feedback",
        json={"message": "Early help offered; the family agreed.", "given_by": "Ali"},
        headers=MASH,
    )
    assert {d["kind"]: d["status"] for d in given.json()["deadlines"]}["feedback"] == "met_late"

    async def all_closed() -> bool:
        items = await inbox_for(inbox_api, rid)
        return all(i["status"] == "done" for i in items if i["kind"] != "new_referral")

    await eventually(all_closed)
    assert [i["status"] for i in await referrer_items(school)] == ["done"]
