"""The referrals API as an agency integrator meets it: what is accepted, what is refused and
why, and that a refusal writes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select

from services.referrals.app import create_app
from services.referrals.models import Referral, plumbing
from shared.clock import ManualClock
from shared.db import Database
from tests.services.factories import referral_body
from tests.support.apps import referrals_settings, serving

# Thursday 2 April 2026, 14:00 BST: Good Friday and Easter Monday follow.
MAUNDY_THURSDAY = datetime(2026, 4, 2, 13, 0, tzinfo=UTC)


@pytest.fixture
async def api(database_url: str, bootstrap: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        referrals_settings(database_url, bootstrap),
        clock=ManualClock(MAUNDY_THURSDAY),
        configure_logs=False,
    )
    async with serving(app) as client:
        yield client


async def written(database: Database) -> tuple[int, int, int]:
    """Rows in referrals, outbox and timers: a refused request must change none of them."""
    async with database.transaction() as session:
        return (
            int(await session.scalar(select(func.count()).select_from(Referral))),
            int(await session.scalar(select(func.count()).select_from(plumbing.outbox))),
            int(await session.scalar(select(func.count()).select_from(plumbing.timers))),
        )


async def test_a_referral_is_stored_announced_and_its_acknowledgement_clock_started(
    api: httpx.AsyncClient, database: Database
) -> None:
    response = await api.post("/v1/referrals", json=referral_body())
    assert response.status_code == 201, response.text
    referral = response.json()
    assert response.headers["location"] == f"/v1/referrals/{referral['id']}"
    assert referral["reference"].startswith("TL-2026-")
    assert referral["status"] == "received"
    # One working day after Maundy Thursday is Tuesday 7 April (Good Friday and Easter Monday
    # are bank holidays): due at the end of that day, 23:00 UTC in BST.
    assert referral["acknowledgement_due_at"] == "2026-04-07T23:00:00Z"
    assert [child["given_names"] for child in referral["children"]] == ["Maya"]

    async with database.transaction() as session:
        events = (
            await session.execute(
                select(plumbing.outbox.c.event_type, plumbing.outbox.c.data).where(
                    plumbing.outbox.c.partition_key == referral["id"]
                )
            )
        ).all()
        due = (
            await session.execute(
                select(plumbing.timers.c.kind, plumbing.timers.c.due_at).where(
                    plumbing.timers.c.aggregate_id == referral["id"]
                )
            )
        ).all()
    assert [event_type for event_type, _ in events] == ["referral.received"]
    data = events[0][1]
    assert data["reference"] == referral["reference"]
    assert data["children"][0]["subject_id"] == referral["children"][0]["subject_id"]
    assert "summary" not in data, "the narrative stays in the referrals service"
    assert due == [("referral.acknowledgement_due", datetime(2026, 4, 7, 23, 0, tzinfo=UTC))]

    read = await api.get(f"/v1/referrals/{referral['id']}")
    assert read.status_code == 200
    assert read.json() == referral


async def test_malformed_json_is_refused_naming_the_body_and_nothing_is_written(
    api: httpx.AsyncClient, database: Database
) -> None:
    before = await written(database)
    response = await api.post(
        "/v1/referrals",
        content=b'{"referrer": {"agency": "school",',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"][0]["field"] == "body"
    assert "not valid JSON" in problem["errors"][0]["message"]
    assert await written(database) == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b["referrer"].update(nickname="Jo"), "referrer.nickname"),
        (lambda b: b.update(urgent=True), "urgent"),
        (
            lambda b: b["children"][0].update(date_of_birth="last spring"),
            "children[0].date_of_birth",
        ),
        (
            lambda b: b["children"][0].update(date_of_birth="2999-01-01"),
            "children[0].date_of_birth",
        ),
        (lambda b: b["children"][0].pop("family_name"), "children[0].family_name"),
        (lambda b: b.update(children=[]), "children"),
        (lambda b: b.pop("concern"), "concern"),
        (lambda b: b["concern"].update(categories=["witchcraft"]), "concern.categories[0]"),
        (lambda b: b["referrer"].update(raised_via="carrier pigeon"), "referrer.raised_via"),
        (lambda b: b["referrer"].update(email="not-an-address"), "referrer.email"),
        (lambda b: b["referrer"].update(organisation_code=""), "referrer.organisation_code"),
    ],
)
async def test_invalid_fields_are_refused_by_name_and_nothing_is_written(
    api: httpx.AsyncClient, database: Database, change, field: str
) -> None:
    body = referral_body()
    change(body)
    before = await written(database)
    response = await api.post("/v1/referrals", json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert field in [error["field"] for error in problem["errors"]], problem
    assert field in problem["detail"]
    assert await written(database) == before


async def test_a_retry_with_the_same_idempotency_key_creates_nothing_new(
    api: httpx.AsyncClient, database: Database
) -> None:
    key = f"hillside-{uuid.uuid4()}"
    first = await api.post("/v1/referrals", json=referral_body(), headers={"Idempotency-Key": key})
    assert first.status_code == 201
    before = await written(database)
    again = await api.post("/v1/referrals", json=referral_body(), headers={"Idempotency-Key": key})
    assert again.status_code == 200
    assert again.json() == first.json()
    assert await written(database) == before

    other = referral_body()
    other["concern"]["summary"] = "A different concern entirely."
    reused = await api.post("/v1/referrals", json=other, headers={"Idempotency-Key": key})
    assert reused.status_code == 422
    assert reused.json()["referral_id"] == first.json()["id"]
    assert await written(database) == before


async def test_unknown_and_malformed_referral_ids(api: httpx.AsyncClient) -> None:
    missing = await api.get(f"/v1/referrals/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.json()["title"] == "Not found"
    malformed = await api.get("/v1/referrals/not-a-uuid")
    assert malformed.status_code == 422
    assert malformed.json()["errors"][0]["field"] == "path.referral_id"


async def test_a_referral_is_acknowledged_once(api: httpx.AsyncClient, database: Database) -> None:
    referral = (await api.post("/v1/referrals", json=referral_body())).json()
    url = f"/v1/referrals/{referral['id']}/acknowledge"
    first = await api.post(url, json={"acknowledged_by": "MASH duty worker"})
    assert first.status_code == 200
    assert first.json()["status"] == "acknowledged"
    before = await written(database)
    second = await api.post(url, json={"acknowledged_by": "MASH duty worker"})
    assert second.status_code == 409
    assert await written(database) == before
    async with database.transaction() as session:
        cancelled = await session.scalar(
            select(plumbing.timers.c.cancelled_at).where(
                plumbing.timers.c.aggregate_id == referral["id"]
            )
        )
    assert cancelled is not None
