"""Each failure schemathesis found, kept as a regression test through the real apps: bad input
gets a 422 naming the field, never a 500, and nothing is written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.consent.models import ConsentRecord
from shared.db import Database
from tests.security.test_matrix import every_service
from tests.support.tokens import bearer

BIG = 149778879271680763494400  # beyond PostgreSQL's BIGINT: the driver refused it (500)
CONSENT = bearer(
    organisation="MASH-DEMO",
    agency="mash",
    scopes="consent:write consent:audit",
    audience="threadline:consent",
)
NOTIFICATIONS = bearer(scopes="referrals:read", audience="threadline:notifications")
LINKING = bearer(
    organisation="MASH-DEMO", agency="mash", scopes="mash:triage", audience="threadline:linking"
)
TIMELINE = bearer(
    organisation="MASH-DEMO", agency="mash", scopes="mash:triage", audience="threadline:timeline"
)
READER = bearer(scopes="referrals:read")


@pytest.fixture(scope="module")
async def clients(database_url: str, bootstrap: str) -> AsyncIterator[dict[str, Any]]:
    async with every_service(database_url, bootstrap) as running:
        yield {service: client for service, (_, client) in running.items()}


def _fields(response: httpx.Response) -> set[str]:
    assert response.status_code == 422, response.text
    return {error["field"] for error in response.json()["errors"]}


def consent_body(**changes: Any) -> dict[str, Any]:
    return {
        "subject_id": "161d26c2-3695-5914-8b0b-ff94ab836e8d",
        "grantor_kind": "parents",
        "status": "given",
        "data_categories": ["*"],
        "recipients": ["*"],
        "purposes": ["*"],
        "obtained_how": "in person",
        "obtained_at": "2026-01-05T10:00:00Z",
        "obtained_by": {"name": "Jo Worker", "role": "Social worker"},
        **changes,
    }


async def test_a_nul_character_in_a_consent_is_a_422_naming_the_field_and_nothing_is_written(
    clients: dict[str, Any], database: Database
) -> None:
    async with database.transaction() as session:
        before = await session.scalar(select(func.count()).select_from(ConsentRecord))
    consent = clients["consent"]
    nul_text = await consent.post(
        "/v1/consents", json=consent_body(obtained_how="in\x00person"), headers=CONSENT
    )
    assert _fields(nul_text) == {"obtained_how"}
    assert "NUL" in nul_text.json()["errors"][0]["message"]
    nested = await consent.post(
        "/v1/consents",
        json=consent_body(obtained_by={"name": "Jo\x00", "role": "Social worker"}),
        headers=CONSENT,
    )
    assert _fields(nested) == {"obtained_by.name"}
    async with database.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(ConsentRecord)) == before


async def test_a_nul_character_in_a_query_filter_is_a_422(clients: dict[str, Any]) -> None:
    audit = await clients["consent"].get(
        "/v1/dpo/decisions", params={"purpose": "a\x00b"}, headers=CONSENT
    )
    assert _fields(audit) == {"query.purpose"}


@pytest.mark.parametrize(
    ("service", "path", "parameter", "headers"),
    [
        ("notifications", "/v1/messages", "offset", NOTIFICATIONS),
        ("notifications", "/v1/inbox", "offset", NOTIFICATIONS),
        ("notifications", "/v1/dead-letters", "offset", NOTIFICATIONS),
        ("linking", "/v1/reviews", "offset", LINKING),
        ("consent", "/v1/dpo/ledger", "after_sequence", CONSENT),
        ("consent", "/v1/dpo/ledger", "before_sequence", CONSENT),
    ],
)
async def test_an_offset_beyond_bigint_is_a_422_naming_it(
    clients: dict[str, Any], service: str, path: str, parameter: str, headers: dict[str, str]
) -> None:
    params = {parameter: str(BIG)}
    if parameter == "before_sequence":
        params["newest_first"] = "true"
    if path == "/v1/inbox":
        headers = bearer(scopes="mash:triage", audience="threadline:notifications")
    response = await clients[service].get(path, params=params, headers=headers)
    assert _fields(response) == {f"query.{parameter}"}


@pytest.mark.parametrize(
    ("service", "path", "parameter", "headers"),
    [
        ("referrals", "/v1/referrals", "received_since", READER),
        ("consent", "/v1/dpo/decisions", "until", CONSENT),
        ("consent", "/v1/dpo/ledger", "since", CONSENT),
        ("linking", "/v1/persons/search", "date_of_birth", LINKING),
        (
            "timeline",
            "/v1/persons/161d26c2-3695-5914-8b0b-ff94ab836e8d/timeline",
            "from",
            TIMELINE,
        ),
    ],
)
async def test_a_number_is_not_taken_for_a_date_in_a_query(
    clients: dict[str, Any], service: str, path: str, parameter: str, headers: dict[str, str]
) -> None:
    params = {parameter: "0.5"}
    if parameter == "date_of_birth":
        params |= {"given_names": "Maya", "family_name": "Exampleton"}
    response = await clients[service].get(path, params=params, headers=headers)
    assert response.status_code == 422, response.text
    assert "not a number" in response.text and parameter in response.text


async def test_a_number_is_not_taken_for_a_date_in_a_body(clients: dict[str, Any]) -> None:
    resolve = await clients["linking"].post(
        "/v1/persons/resolve",
        json={"given_names": "Maya", "family_name": "Exampleton", "unborn_expected_date": 0},
        headers=LINKING,
    )
    assert resolve.status_code == 422
    assert "unborn_expected_date must be a date" in resolve.text
    consent = await clients["consent"].post(
        "/v1/consents", json=consent_body(obtained_at=1767607200), headers=CONSENT
    )
    assert consent.status_code == 422 and "obtained_at must be a date" in consent.text


async def test_a_number_is_not_taken_for_a_yes_or_no_in_a_body(clients: dict[str, Any]) -> None:
    resolve = await clients["linking"].post(
        "/v1/persons/resolve",
        json={"given_names": "Maya", "family_name": "Exampleton", "date_of_birth_estimated": 0},
        headers=LINKING,
    )
    assert resolve.status_code == 422
    assert "date_of_birth_estimated must be true or false" in resolve.text
    search = await clients["linking"].get(
        "/v1/persons/search",
        params={"given_names": "Maya", "family_name": "Exampleton", "date_of_birth_estimated": "1"},
        headers=LINKING,
    )
    assert search.status_code == 200, search.text  # a query's "1" is still a yes


async def test_a_referral_status_filter_that_is_no_status_is_refused_by_name(
    clients: dict[str, Any],
) -> None:
    """Found on 23 November: a NUL byte in ``status`` reached PostgreSQL (500). The filter now
    takes only the statuses a referral has."""
    referrals = clients["referrals"]
    for value in ("噐ß\x00³z8", "closed"):
        refused = await referrals.get("/v1/referrals", params={"status": value}, headers=READER)
        assert _fields(refused) == {"query.status"}
    found = await referrals.get("/v1/referrals", params={"status": "decided"}, headers=READER)
    assert found.status_code == 200, found.text
