"""End to end on real Kafka and PostgreSQL: a school's referral reaches the linking service as
``referral.received``; its subjects become persons and ``subject.linked`` and
``household.updated`` are published; a second referral about the same child links to her."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from services.linking.app import create_app as create_linking
from services.referrals.app import create_app as create_referrals
from shared.clock import ManualClock
from shared.events.topics import Topic
from tests.services.factories import referral_body
from tests.services.linking.test_linking_service import nhs_number
from tests.support.apps import linking_settings, referrals_settings, serving
from tests.support.kafka import eventually, header, read_topic
from tests.support.tokens import MASH_LINKING, SCHOOL

# The real time, not a fixed date: the referrals' deadline timers stay in the future, so no
# other test's referrals app (on the system clock) fires them while the suite runs.
NOW = datetime.now(UTC)


@pytest.fixture
async def services(
    database_url: str, bootstrap: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    referrals = create_referrals(
        referrals_settings(database_url, bootstrap),
        clock=ManualClock(NOW),
        configure_logs=False,
    )
    linking = create_linking(linking_settings(database_url, bootstrap), configure_logs=False)
    async with (
        serving(referrals, headers=SCHOOL) as referrals_api,
        serving(linking, headers=MASH_LINKING) as linking_api,
    ):
        yield referrals_api, linking_api


async def test_a_referrals_subjects_are_linked_and_announced(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    referrals_api, linking_api = services
    body = referral_body()
    family = f"Flowtest{uuid.uuid4().hex[:6]}"
    for person in body["children"] + body["family_members"]:
        person["family_name"] = family
    # An NHS number of its own: every other test's referral_body() child has the factory's, and
    # linking joins them all to one person by it.
    number = nhs_number(uuid.uuid4().int % 10**9)
    body["children"][0]["nhs_number"] = number
    posted = await referrals_api.post("/v1/referrals", json=body)
    assert posted.status_code == 201, posted.text
    maya = posted.json()["children"][0]["subject_id"]

    async def linked() -> list:
        return await read_topic(
            bootstrap_of(linking_api),
            Topic.LINKING.value,
            until=lambda found: any(_data(r).get("subject_id") == maya for r in found),
            keep=lambda r: header(r, "ce_type") == "subject.linked",
            timeout=30,
        )

    records = await linked()
    (event,) = [_data(r) for r in records if _data(r).get("subject_id") == maya]
    person_id = event["person_id"]
    assert event["method"] in {"new_person", "nhs_number"}
    assert event["source_type"] == "referral"

    async def person() -> dict | None:
        response = await linking_api.get(f"/v1/persons/{person_id}")
        return response.json() if response.status_code == 200 else None

    await eventually(person)
    shown = await person()
    assert shown is not None
    assert shown["records"][0]["nhs_number"] == number
    assert shown["households"]

    # The same child referred again (a different school spelling, the same NHS number).
    again = referral_body()
    again["children"] = [
        dict(again["children"][0], given_names="Maia", family_name=family, nhs_number=number)
    ]
    again["family_members"] = []
    second = await referrals_api.post("/v1/referrals", json=again)
    assert second.status_code == 201, second.text

    async def both() -> bool:
        found = await person()
        return bool(found and len(found["records"]) == 2)

    await eventually(both)
    shown = await person()
    assert shown is not None
    assert sorted(r["link_method"] for r in shown["records"]) == ["new_person", "nhs_number"]


def bootstrap_of(api: httpx.AsyncClient) -> str:
    transport = api._transport
    app = transport.app  # type: ignore[attr-defined]
    return str(app.state.settings.kafka_bootstrap_servers)


def _data(record: object) -> dict:
    return dict(json.loads(record.value))  # type: ignore[attr-defined]
