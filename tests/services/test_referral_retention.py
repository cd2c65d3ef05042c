"""Retention, end to end on Kafka: when the consent service says a child's narratives have passed
their retention period, the referrals service destroys that child's data key (crypto-shredding).
The sibling's copies, sealed under the sibling's own key, stay readable."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from services.consent.events import RetentionExpired
from services.referrals.app import create_app
from services.referrals.models import data_keys, plumbing
from shared import context
from shared.db import Database
from shared.events.envelope import envelope_for, to_kafka
from shared.events.registry import spec_for
from shared.kafka import make_producer
from tests.services.factories import OWN_WORDS, WHAT_HAPPENED, referral_body
from tests.support.apps import referrals_settings, serving
from tests.support.kafka import eventually
from tests.support.tokens import MASH, SCHOOL


@pytest.fixture
async def api(database_url: str, bootstrap: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(referrals_settings(database_url, bootstrap), configure_logs=False)
    async with serving(app) as client:
        yield client


async def announce(bootstrap: str, event: RetentionExpired) -> uuid.UUID:
    """As the consent service's relay would publish it."""
    envelope = envelope_for(event, service="consent", trace=context.current(), now=event.expired_at)
    record = to_kafka(envelope)
    producer = make_producer(bootstrap, client_id="test-consent-relay")
    await producer.start()
    try:
        for _ in range(2):  # delivered twice: the second is a redelivery and changes nothing
            await producer.send_and_wait(
                str(spec_for(event).topic), record.value, key=record.key, headers=record.headers
            )
    finally:
        await producer.stop()
    return envelope.id


async def consumed(database: Database, event_id: uuid.UUID) -> bool:
    async with database.transaction() as session:
        found = await session.scalar(
            select(plumbing.inbox.c.outcome).where(plumbing.inbox.c.event_id == event_id)
        )
    return found == "applied"


async def destroyed_at(database: Database, subject_id: uuid.UUID) -> datetime | None:
    async with database.transaction() as session:
        row = (
            await session.execute(
                select(data_keys.c.destroyed_at, data_keys.c.wrapped_key).where(
                    data_keys.c.subject_id == subject_id
                )
            )
        ).one()
    assert (row.destroyed_at is None) == (row.wrapped_key is not None)
    return row.destroyed_at


async def test_an_expired_childs_narratives_are_shredded_and_the_siblings_kept(
    api: httpx.AsyncClient, bootstrap: str, database: Database
) -> None:
    created = await api.post("/v1/referrals", json=referral_body(), headers=SCHOOL)
    assert created.status_code == 201, created.text
    referral = created.json()
    maya, leo = (uuid.UUID(child["subject_id"]) for child in referral["children"])
    assert referral["children"][0]["own_words"] == OWN_WORDS

    event = RetentionExpired(
        subject_id=maya,
        record_type="case_narrative",
        referral_ids=[uuid.UUID(referral["id"])],
        last_referral_at=datetime(2020, 1, 6, tzinfo=UTC),
        expired_at=datetime.now(UTC),
        policy="case_narrative: 6 years after the last referral, and until age 25",
        ledger_sequence=1,
    )
    await announce(bootstrap, event)

    async def maya_erased() -> bool:
        return await destroyed_at(database, maya) is not None

    await eventually(maya_erased, timeout=30)
    assert await destroyed_at(database, leo) is None

    read = (await api.get(f"/v1/referrals/{referral['id']}", headers=MASH)).json()
    assert read["children"][0]["own_words"] is None  # Maya's own words: gone for good
    assert read["what_happened"] == WHAT_HAPPENED  # still readable from Leo's copy

    other_record_type = event.model_copy(update={"subject_id": leo, "record_type": "access_log"})
    event_id = await announce(bootstrap, other_record_type)  # not held here: nothing destroyed

    async def handled() -> bool:
        return await consumed(database, event_id)

    await eventually(handled, timeout=30)
    assert await destroyed_at(database, leo) is None
