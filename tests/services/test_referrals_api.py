"""The referrals API as an agency integrator meets it: what is accepted, what is refused and
why, who may read what, and that a refusal writes nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select

from deploy.local.stack import Stack
from services.referrals.app import create_app
from services.referrals.models import AccessRecord, Referral, plumbing
from shared.clock import ManualClock
from shared.db import Database
from tests.services.factories import OWN_WORDS, WHAT_HAPPENED, referral_body
from tests.support.apps import referrals_settings, serving
from tests.support.tokens import MASH, OTHER_SCHOOL, SCHOOL, bearer

# Thursday 2 April 2026, 14:00 BST: Good Friday and Easter Monday follow.
MAUNDY_THURSDAY = datetime(2026, 4, 2, 13, 0, tzinfo=UTC)
# Validation of dates uses the real calendar (a child's age is not a test fixture).
IN_TWO_MONTHS = (date.today() + timedelta(days=60)).isoformat()


@pytest.fixture
async def api(database_url: str, bootstrap: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        # No timer scheduler: it would fire deadlines other tests left pending in the shared
        # database (their clocks differ), adding rows while a test counts them.
        referrals_settings(database_url, bootstrap, timers_enabled=False),
        clock=ManualClock(MAUNDY_THURSDAY),
        configure_logs=False,
    )
    async with serving(app) as client:
        yield client


async def post(api: httpx.AsyncClient, body: dict, **headers: str) -> httpx.Response:
    return await api.post("/v1/referrals", json=body, headers={**SCHOOL, **headers})


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
    response = await post(api, referral_body())
    assert response.status_code == 201, response.text
    referral = response.json()
    assert response.headers["location"] == f"/v1/referrals/{referral['id']}"
    assert referral["reference"].startswith("TL-2026-")
    assert referral["status"] == "received"
    assert referral["referrer_organisation_code"] == "100001"  # from the token, not the body
    # One working day after Maundy Thursday is Tuesday 7 April (Good Friday and Easter Monday
    # are bank holidays): due at the end of that day, 23:00 UTC in BST.
    assert referral["acknowledgement_due_at"] == "2026-04-07T23:00:00Z"
    maya, leo = referral["children"]
    assert (maya["nhs_number"], maya["upn"], maya["postcode"]) == (
        "9434765919",
        "L938200124001",
        "DE1 1AA",
    )
    assert maya["own_words"] == OWN_WORDS and leo["own_words"] is None
    assert referral["what_happened"] == WHAT_HAPPENED
    assert [r["relationship"] for r in referral["family_members"][0]["relationships"]] == [
        "mother",
        "mother",
    ]

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
                select(plumbing.timers.c.payload["kind"].astext, plumbing.timers.c.due_at)
                .where(plumbing.timers.c.payload["referral_id"].astext == referral["id"])
                .order_by(plumbing.timers.c.due_at, plumbing.timers.c.payload["kind"].astext)
            )
        ).all()
    assert [event_type for event_type, _ in events] == ["referral.received"]
    data = events[0][1]
    assert data["children"][0]["subject_id"] == maya["subject_id"]
    assert data["children"][0]["nhs_number"] == "9434765919"
    assert data["family_members"][0]["relationships"][1]["child_subject_id"] == leo["subject_id"]
    assert WHAT_HAPPENED not in str(data) and OWN_WORDS not in str(data)
    end_of_tuesday = datetime(2026, 4, 7, 23, 0, tzinfo=UTC)
    end_of_thursday = datetime(2026, 4, 9, 23, 0, tzinfo=UTC)
    assert due == [
        ("acknowledgement", end_of_tuesday),
        ("decision", end_of_tuesday),
        ("feedback", end_of_thursday),
    ]

    read = await api.get(f"/v1/referrals/{referral['id']}", headers=SCHOOL)
    assert read.status_code == 200
    assert read.json() == referral


async def test_addresses_and_a_family_members_nhs_number_are_announced_for_linking(
    api: httpx.AsyncClient, database: Database
) -> None:
    body = referral_body()
    body["family_members"][0] |= {
        "nhs_number": "401 023 2137",
        "address": {"lines": ["1 Test Street", "Littleover"], "postcode": "de1 1aa"},
    }
    response = await post(api, body)
    assert response.status_code == 201, response.text
    referral = response.json()
    assert referral["family_members"][0]["nhs_number"] == "4010232137"
    async with database.transaction() as session:
        (data,) = (
            await session.execute(
                select(plumbing.outbox.c.data).where(
                    plumbing.outbox.c.partition_key == referral["id"]
                )
            )
        ).scalars()
    maya, leo = data["children"]
    assert (maya["address_lines"], maya["town"], maya["postcode"]) == (
        ["1 Test Street"],
        "Derby",
        "DE1 1AA",
    )
    assert (leo["address_lines"], leo["town"]) == ([], None)
    (sarah,) = data["family_members"]
    assert (sarah["nhs_number"], sarah["address_lines"], sarah["postcode"]) == (
        "4010232137",
        ["1 Test Street", "Littleover"],
        "DE1 1AA",
    )


async def test_the_database_holds_no_plaintext_narrative(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    marker = f"Unique narrative {uuid.uuid4()} about the kitchen"
    words = f"Child's words {uuid.uuid4()}: he hurt me"
    body = referral_body()
    body["concern"]["what_happened"] = marker
    body["children"][0]["own_words"] = words
    assert (await post(api, body)).status_code == 201
    dump = stack.postgres.dump(stack.database)
    assert "Exampleton" in dump  # the dump is real and holds the referral
    assert marker not in dump
    assert words not in dump


async def test_malformed_json_is_refused_naming_the_body_and_nothing_is_written(
    api: httpx.AsyncClient, database: Database
) -> None:
    before = await written(database)
    response = await api.post(
        "/v1/referrals",
        content=b'{"referrer": {"organisation_name": "Oakfield",',
        headers={"content-type": "application/json", **SCHOOL},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"][0]["field"] == "body"
    assert "not valid JSON" in problem["errors"][0]["message"]
    assert await written(database) == before


def _child(b: dict, **changes: object) -> None:
    b["children"][0].update(changes)


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        (lambda b: b["referrer"].update(nickname="Jo"), "referrer.nickname", "not a field"),
        (lambda b: b.update(urgent=True), "urgent", "not a field"),
        (lambda b: _child(b, date_of_birth="last spring"), "children[0].date_of_birth", "date"),
        (lambda b: _child(b, date_of_birth="2999-01-01"), "children[0].date_of_birth", "future"),
        (lambda b: b["children"][0].pop("family_name"), "children[0].family_name", "required"),
        (lambda b: _child(b, nhs_number="943 476 5910"), "children[0].nhs_number", "modulus 11"),
        (lambda b: _child(b, nhs_number="12345"), "children[0].nhs_number", "10 digits"),
        (lambda b: _child(b, upn="M938200124001"), "children[0].upn", "check letter"),
        (
            lambda b: b["children"][0]["address"].update(postcode="NOT A CODE"),
            "children[0].address.postcode",
            "such as SW1A 1AA",
        ),
        (
            lambda b: _child(b, estimated_age_years=7),
            "children[0]",
            "exactly one of date_of_birth, estimated_age_years or unborn",
        ),
        (
            lambda b: _child(b, date_of_birth=None, unborn={"expected_date": IN_TWO_MONTHS}),
            "children[0]",
            "unborn child cannot have a UPN",
        ),
        (lambda b: b.update(children=[]), "children", "at least 1"),
        (lambda b: b.pop("concern"), "concern", "required"),
        (
            lambda b: b["concern"].update(categories=["witchcraft"]),
            "concern.categories[0]",
            "neglect",
        ),
        (
            lambda b: b["concern"].update(what_happened="x" * 20001),
            "concern.what_happened",
            "20000",
        ),
        (lambda b: b["concern"].pop("immediate_risk"), "concern.immediate_risk", "required"),
        (
            lambda b: b["referrer"].update(raised_via="carrier pigeon"),
            "referrer.raised_via",
            "phone",
        ),
        (lambda b: b["referrer"].update(email="not-an-address"), "referrer.email", "pattern"),
        (
            lambda b: b["referrer"].pop("email"),
            "referrer",
            "email or a phone number",
        ),
        (
            lambda b: b["consent"]["parents"].pop("why_not_asked"),
            "consent.parents",
            "why consent was not asked",
        ),
        (
            lambda b: b["family_members"][0]["relationships"][0].update(child=5),
            "family_members",
            "children are numbered 0 to 1",
        ),
        (
            lambda b: b["family_members"][0].update(nhs_number="401 023 2138"),
            "family_members[0].nhs_number",
            "modulus 11",
        ),
        (
            lambda b: b["family_members"][0]["relationships"][0].update(relationship="uncle"),
            "family_members[0].relationships[0].relationship",
            "mother",
        ),
    ],
)
async def test_invalid_fields_are_refused_by_name_and_rule_and_nothing_is_written(
    api: httpx.AsyncClient, database: Database, change, field: str, rule: str
) -> None:
    body = referral_body()
    change(body)
    before = await written(database)
    response = await post(api, body)
    assert response.status_code == 422, response.text
    problem = response.json()
    errors = {error["field"]: error["message"] for error in problem["errors"]}
    assert field in errors, problem
    assert rule in errors[field], errors[field]
    assert field in problem["detail"]
    assert await written(database) == before


async def test_an_unborn_child_and_an_estimated_age_are_accepted(api: httpx.AsyncClient) -> None:
    body = referral_body()
    body["children"] = [
        {"family_name": "Exampleton", "unborn": {"expected_date": IN_TWO_MONTHS}},
        {"given_names": "Leo", "family_name": "Exampleton", "estimated_age_years": 4},
    ]
    response = await post(api, body)
    assert response.status_code == 201, response.text
    unborn = response.json()["children"][0]
    assert (unborn["given_names"], unborn["unborn_expected_date"]) == (None, IN_TWO_MONTHS)


async def test_a_retry_with_the_same_idempotency_key_creates_nothing_new(
    api: httpx.AsyncClient, database: Database
) -> None:
    key = f"oakfield-{uuid.uuid4()}"
    first = await post(api, referral_body(), **{"Idempotency-Key": key})
    assert first.status_code == 201
    before = await written(database)
    again = await post(api, referral_body(), **{"Idempotency-Key": key})
    assert again.status_code == 200
    assert again.json() == first.json()
    assert await written(database) == before

    other = referral_body()
    other["concern"]["what_happened"] = "A different concern entirely."
    reused = await post(api, other, **{"Idempotency-Key": key})
    assert reused.status_code == 409
    assert reused.json()["referral_id"] == first.json()["id"]
    assert await written(database) == before
    # Keys belong to an organisation: another school may use the same one.
    theirs = await api.post(
        "/v1/referrals", json=referral_body(), headers={**OTHER_SCHOOL, "Idempotency-Key": key}
    )
    assert theirs.status_code == 201


async def test_concurrent_retries_with_one_key_make_one_referral(
    api: httpx.AsyncClient, database: Database
) -> None:
    """Retries racing each other land in the same group commit, or in consecutive ones."""
    key = f"oakfield-{uuid.uuid4()}"
    before = await written(database)
    responses = await asyncio.gather(
        *(post(api, referral_body(), **{"Idempotency-Key": key}) for _ in range(12))
    )
    assert sorted(response.status_code for response in responses) == [200] * 11 + [201]
    assert len({response.json()["id"] for response in responses}) == 1
    assert len({response.json()["reference"] for response in responses}) == 1
    assert (await written(database))[0] == before[0] + 1


async def test_two_workers_racing_with_one_key_make_one_referral(
    api: httpx.AsyncClient, database_url: str, bootstrap: str, database: Database
) -> None:
    """Two processes' group commits both miss the key, then meet at the unique constraint."""
    other_worker = create_app(
        referrals_settings(database_url, bootstrap, relay_enabled=False, timers_enabled=False),
        clock=ManualClock(MAUNDY_THURSDAY),
        configure_logs=False,
    )
    before = await written(database)
    async with serving(other_worker) as other:
        for _ in range(3):
            key = f"oakfield-{uuid.uuid4()}"
            responses = await asyncio.gather(
                *(post(client, referral_body(), **{"Idempotency-Key": key}) for client in
                  (api, other, api, other, api, other))
            )  # fmt: skip
            assert sorted(r.status_code for r in responses) == [200] * 5 + [201]
            assert len({r.json()["id"] for r in responses}) == 1
    assert (await written(database))[0] == before[0] + 3


async def test_concurrent_referrals_each_get_their_own_rows_and_reference(
    api: httpx.AsyncClient, database: Database
) -> None:
    before = await written(database)
    responses = await asyncio.gather(*(post(api, referral_body()) for _ in range(25)))
    assert {response.status_code for response in responses} == {201}
    bodies = [response.json() for response in responses]
    assert len({body["id"] for body in bodies}) == len({body["reference"] for body in bodies}) == 25
    for body in bodies:  # each reads back as it was answered (texts sealed under its own keys)
        read = await api.get(f"/v1/referrals/{body['id']}", headers=SCHOOL)
        assert read.json() == body
    after = await written(database)
    assert after[0] == before[0] + 25


async def test_no_token_a_bad_token_or_a_missing_scope_is_refused_before_anything_is_written(
    api: httpx.AsyncClient, database: Database
) -> None:
    before = await written(database)
    missing = await api.post("/v1/referrals", json=referral_body())
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong_audience = await api.post(
        "/v1/referrals", json=referral_body(), headers=bearer(audience="threadline:consent")
    )
    assert wrong_audience.status_code == 401
    assert 'error="invalid_token"' in wrong_audience.headers["www-authenticate"]
    no_scope = await api.post(
        "/v1/referrals", json=referral_body(), headers=bearer(scopes="contacts:write")
    )
    assert no_scope.status_code == 403
    assert "insufficient_scope" in no_scope.headers["www-authenticate"]
    assert await written(database) == before


async def test_an_agency_reads_only_its_own_referrals_and_every_read_is_recorded(
    api: httpx.AsyncClient, database: Database
) -> None:
    referral = (await post(api, referral_body())).json()
    url = f"/v1/referrals/{referral['id']}"

    theirs = await api.get(url, headers=OTHER_SCHOOL)
    assert theirs.status_code == 404  # not 403: another school learns nothing, not even that
    missing = await api.get(f"/v1/referrals/{uuid.uuid4()}", headers=OTHER_SCHOOL)
    assert theirs.json()["title"] == missing.json()["title"] == "Not found"
    assert (await api.get(url, headers=SCHOOL)).status_code == 200
    assert (await api.get(url, headers=MASH)).status_code == 200

    async with database.transaction() as session:
        records = (
            await session.execute(
                select(AccessRecord.organisation_code, AccessRecord.outcome)
                .where(AccessRecord.object_id == referral["id"])
                .order_by(AccessRecord.id)
            )
        ).all()
    assert records == [("100002", "refused"), ("100001", "allowed"), ("MASH-DEMO", "allowed")]


async def test_a_list_shows_an_agency_its_own_referrals_and_pages_through_them(
    api: httpx.AsyncClient,
) -> None:
    mine = [(await post(api, referral_body())).json()["id"] for _ in range(3)]
    theirs = await api.post("/v1/referrals", json=referral_body(), headers=OTHER_SCHOOL)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/v1/referrals", params=params, headers=SCHOOL)).json()
        seen += [item["id"] for item in page["items"]]
        assert {item["referrer_organisation_code"] for item in page["items"]} <= {"100001"}
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert set(mine) <= set(seen)
    assert theirs.json()["id"] not in seen
    assert len(seen) == len(set(seen)), "a referral appeared on two pages"
    everything = (await api.get("/v1/referrals", params={"limit": 200}, headers=MASH)).json()
    assert theirs.json()["id"] in {item["id"] for item in everything["items"]}
    bad = await api.get("/v1/referrals", params={"cursor": "!!"}, headers=SCHOOL)
    assert bad.status_code == 422


async def test_unknown_and_malformed_referral_ids(api: httpx.AsyncClient) -> None:
    missing = await api.get(f"/v1/referrals/{uuid.uuid4()}", headers=SCHOOL)
    assert missing.status_code == 404
    malformed = await api.get("/v1/referrals/not-a-uuid", headers=SCHOOL)
    assert malformed.status_code == 422
    assert malformed.json()["errors"][0]["field"] == "path.referral_id"


async def test_only_the_mash_acknowledges_and_only_once(
    api: httpx.AsyncClient, database: Database
) -> None:
    referral = (await post(api, referral_body())).json()
    url = f"/v1/referrals/{referral['id']}/acknowledge"
    by_school = await api.post(url, json={"acknowledged_by": "Jo"}, headers=SCHOOL)
    assert by_school.status_code == 403
    first = await api.post(url, json={"acknowledged_by": "MASH duty worker"}, headers=MASH)
    assert first.status_code == 200
    assert first.json()["status"] == "acknowledged"
    before = await written(database)
    second = await api.post(url, json={"acknowledged_by": "MASH duty worker"}, headers=MASH)
    assert second.status_code == 409
    assert await written(database) == before
    async with database.transaction() as session:
        cancelled = await session.scalar(
            select(plumbing.timers.c.cancelled_at)
            .where(plumbing.timers.c.payload["referral_id"].astext == referral["id"])
            .where(plumbing.timers.c.payload["kind"].astext == "acknowledgement")
        )
    assert cancelled is not None
    assert {d["kind"]: d["status"] for d in first.json()["deadlines"]}["acknowledgement"] == "met"
