"""Operation Encompass end to end, through Kafka: a police domestic-abuse contact with a child
present reaches the child's school DSL before the next school day (inbox, e-mail and a signed
webhook), decided by the consent service; an unknown school or a child not in school goes to
the local authority's education safeguarding team; a notification the DSL has not acknowledged
by registration is escalated, across a weekend and across a half-term."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.clock import ManualClock
from tests.services.consent_support import MASH_ASKS, consent_body
from tests.services.notifications.support import (
    DSL_MAILBOX,
    EDS_MAILBOX,
    NARRATIVE_WORDS,
    World,
    linked_in_notifications,
    police_incident,
    referral_about,
    unique_child,
    world,
)
from tests.support.kafka import eventually
from tests.support.tokens import bearer

NOTIFY = ["threadline:referrals", "threadline:notifications"]
POLICE = bearer(organisation="DEMO-PF", agency="police", scopes="contacts:write", audience=NOTIFY)
SCHOOL = bearer(organisation="100001", audience=NOTIFY)
OTHER_SCHOOL = bearer(organisation="100002", audience=NOTIFY)
EDS = bearer(
    organisation="DEMO-LA-EDS", agency="local_authority", scopes="referrals:read", audience=NOTIFY
)
MASH = bearer(
    organisation="MASH-DEMO", agency="mash", scopes="referrals:read mash:triage", audience=NOTIFY
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def _school_knows(w: World, child: dict[str, Any]) -> dict[str, Any]:
    """A referral from the school naming the child's school: the record that places them,
    linked to the child before the police contact comes."""
    body = referral_about(child)
    response = await w.referrals.post("/v1/referrals", json=body, headers=SCHOOL)
    assert response.status_code == 201, response.text
    referral = dict(response.json())
    await linked_in_notifications(w.database_url, [c["subject_id"] for c in referral["children"]])
    return referral


async def _incident(w: World, children: list[dict[str, Any]], occurred: datetime) -> str:
    response = await w.referrals.post(
        "/v1/contacts", json=police_incident(children, _iso(occurred)), headers=POLICE
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _notices(w: World, contact_id: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    return [
        m
        for m in await w.message(headers, kind="encompass.notice")
        if m["contact_id"] == contact_id
    ]


async def test_the_childs_school_dsl_is_told_by_inbox_email_and_signed_webhook(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    async with world(database_url, bootstrap, tmp_path) as w:
        child = unique_child(school_urn="100001")
        await _school_knows(w, child)
        police_view = {k: v for k, v in child.items() if k != "school"}  # police do not know it
        contact_id = await _incident(w, [police_view], datetime.now(UTC) - timedelta(hours=3))

        async def delivered() -> list[dict[str, Any]]:
            found = await _notices(w, contact_id, SCHOOL)
            return [m for m in found if m["status"] == "delivered"]

        await eventually(delivered, timeout=90)
        [notice] = await delivered()
        name = f"{child['given_names']} {child['family_name']}"
        assert notice["recipient"] == {
            "organisation_code": "100001",
            "agency": "school",
            "role": "dsl",
            "name": None,
        }
        assert notice["title"] == f"Operation Encompass: {name} may need support today"
        assert "saw or heard it" in notice["body"] and "do not question them" in notice["body"]
        assert notice["acknowledge_by"] == notice["deliver_by"]
        assert notice["deliver_by"].endswith(":45:00Z")  # registration, 08:45 London
        # Only what the school needs that day: no adult, no account, no risk grading.
        for word in NARRATIVE_WORDS:
            assert word not in notice["body"], word
        disclosure = notice["disclosure"]
        assert disclosure["outcome"] == "share" and disclosure["lawful_basis"] == "public_task"
        assert {d["channel"] for d in notice["deliveries"]} == {"email", "webhook"}
        assert all(d["status"] == "delivered" for d in notice["deliveries"])

        [mail] = w.smtp.to(DSL_MAILBOX)
        assert mail.subject == notice["title"]
        assert notice["id"] in mail.text and "Victimson" not in mail.text
        [webhook] = w.receiver.for_message(notice["id"])
        assert webhook.payload["type"] == "threadline.encompass.notice"
        assert webhook.payload["data"]["body"] == notice["body"]

        # The decision is in the ledger: the DPO's view names the police, the school, the basis.
        dpo = bearer(
            organisation="DEMO-LA",
            agency="dpo",
            scopes="consent:audit",
            audience="threadline:consent",
        )
        ledger = await w.consent.get(
            "/v1/dpo/decisions", params={"purpose": "operation_encompass"}, headers=dpo
        )
        entries = [e for e in ledger.json()["items"] if e["entry_id"] == disclosure["decision_id"]]
        assert len(entries) == 1
        assert (entries[0]["from_agency"], entries[0]["to_agency"]) == ("police", "school")

        # Another school sees nothing of it; the police (the sender) see it and its status.
        assert await _notices(w, contact_id, OTHER_SCHOOL) == []
        assert [m["status"] for m in await _notices(w, contact_id, POLICE)] == ["delivered"]

        acknowledged = await w.notifications.post(
            f"/v1/messages/{notice['id']}/acknowledge",
            json={"acknowledged_by": "Priya, DSL"},
            headers=SCHOOL,
        )
        assert acknowledged.status_code == 200, acknowledged.text
        assert acknowledged.json()["acknowledged_by"] == "Priya, DSL"
        # Only the recipient acknowledges; for anyone else the message does not exist.
        refused = await w.notifications.post(
            f"/v1/messages/{notice['id']}/acknowledge",
            json={"acknowledged_by": "someone"},
            headers=OTHER_SCHOOL,
        )
        assert refused.status_code == 404


async def test_an_unknown_school_means_the_education_safeguarding_team_is_told(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    async with world(database_url, bootstrap, tmp_path) as w:
        child = unique_child()  # no record names a school
        contact_id = await _incident(w, [child], datetime.now(UTC) - timedelta(hours=2))

        async def told() -> list[dict[str, Any]]:
            return [m for m in await _notices(w, contact_id, EDS) if m["status"] == "delivered"]

        await eventually(told, timeout=90)
        [notice] = await told()
        assert notice["recipient"]["organisation_code"] == "DEMO-LA-EDS"
        assert notice["recipient"]["role"] == "education_safeguarding"
        assert "we do not know which school the child attends" in notice["body"]
        assert notice["details"]["found_by"] == "school_unknown"
        assert [mail.subject for mail in w.smtp.to(EDS_MAILBOX)] == [notice["title"]]
        assert await _notices(w, contact_id, SCHOOL) == []


async def test_a_child_missing_education_is_not_sent_to_their_old_school(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    async with world(database_url, bootstrap, tmp_path) as w:
        child = unique_child(school_urn="100001")
        await _school_knows(w, child)
        missing = {
            "type": "school_attendance_concern",
            "kind": "missing_education",
            "period_start": (datetime.now(UTC) - timedelta(days=20)).date().isoformat(),
            "school_urn": "100001",
            "subjects": [{k: v for k, v in child.items() if k != "school"}],
        }
        la = bearer(organisation="DEMO-LA", agency="local_authority", scopes="contacts:write")
        response = await w.referrals.post("/v1/contacts", json=missing, headers=la)
        assert response.status_code == 201, response.text
        concern = [s["subject_id"] for s in response.json()["subjects"]]
        await linked_in_notifications(w.database_url, concern)
        police_view = {k: v for k, v in child.items() if k != "school"}
        contact_id = await _incident(w, [police_view], datetime.now(UTC) - timedelta(hours=1))

        async def told() -> list[dict[str, Any]]:
            return [m for m in await _notices(w, contact_id, EDS) if m["status"] == "delivered"]

        await eventually(told, timeout=90)
        [notice] = await told()
        assert notice["details"]["found_by"] == "not_in_school"
        assert "not in school" in notice["body"]
        assert await _notices(w, contact_id, SCHOOL) == []


async def test_a_refused_disclosure_is_not_sent_and_the_refusal_is_visible(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    async with world(database_url, bootstrap, tmp_path) as w:
        child = unique_child(school_urn="100001")
        referral = await _school_knows(w, child)
        [referred] = referral["children"]
        refusal = consent_body(
            referred["subject_id"],
            status="refused",
            recipients=["school"],
            purposes=["operation_encompass"],
        )
        recorded = await w.consent.post("/v1/consents", json=refusal, headers=MASH_ASKS)
        assert recorded.status_code == 201, recorded.text
        contact_id = await _incident(w, [child], datetime.now(UTC) - timedelta(hours=1))

        async def refused() -> list[dict[str, Any]]:
            found = await _notices(w, contact_id, POLICE)
            return [m for m in found if m["status"] == "refused"]

        await eventually(refused, timeout=90)
        [notice] = await refused()
        assert notice["disclosure"]["outcome"] == "do_not_share"
        assert notice["disclosure"]["reasons"], "the refusal says why"
        assert notice["deliveries"] == []
        assert [m["id"] for m in await _notices(w, contact_id, MASH)] == [notice["id"]]
        # Not sent: the school's inbox, mailbox and system never see it.
        assert await _notices(w, contact_id, SCHOOL) == []
        assert w.smtp.to(DSL_MAILBOX) == []
        assert w.receiver.for_message(notice["id"]) == []


# -- the deadline: before registration on the next school day ---------------------------------

# Friday 13 November 2026, 22:00 GMT: the next school day starts Monday 16 November, 08:45.
FRIDAY_NIGHT = datetime(2026, 11, 13, 22, 0, tzinfo=UTC)
MONDAY_REGISTRATION = datetime(2026, 11, 16, 8, 45, tzinfo=UTC)
# Friday 23 October 2026, 19:00 BST, the last day of the first half of the autumn term: half
# term is 26-30 October, Monday 2 November is an INSET day, so Tuesday 3 November, 08:45 GMT.
BEFORE_HALF_TERM = datetime(2026, 10, 23, 18, 0, tzinfo=UTC)
AFTER_HALF_TERM = datetime(2026, 11, 3, 8, 45, tzinfo=UTC)


async def _escalations(w: World, notice_id: str) -> list[dict[str, Any]]:
    return [
        m
        for m in await w.message(EDS, kind="encompass.escalation")
        if m["details"].get("notification") == notice_id
    ]


@pytest.mark.parametrize(
    ("received", "registration", "quiet_days"),
    [
        (
            FRIDAY_NIGHT,
            MONDAY_REGISTRATION,
            [datetime(2026, 11, 14, 9, 0, tzinfo=UTC), datetime(2026, 11, 15, 9, 0, tzinfo=UTC)],
        ),
        (
            BEFORE_HALF_TERM,
            AFTER_HALF_TERM,
            [
                datetime(2026, 10, 26, 9, 0, tzinfo=UTC),  # half-term Monday
                datetime(2026, 10, 30, 9, 0, tzinfo=UTC),
                datetime(2026, 11, 2, 9, 0, tzinfo=UTC),  # INSET day
            ],
        ),
    ],
    ids=["weekend", "half-term"],
)
async def test_a_notice_not_acknowledged_by_registration_is_escalated(
    database_url: str,
    bootstrap: str,
    tmp_path: Path,
    received: datetime,
    registration: datetime,
    quiet_days: list[datetime],
) -> None:
    clock = ManualClock(received)
    async with world(database_url, bootstrap, tmp_path, clock=clock) as w:
        child = unique_child(school_urn="100001")
        await _school_knows(w, child)
        contact_id = await _incident(w, [child], received - timedelta(hours=1))

        async def delivered() -> list[dict[str, Any]]:
            return [m for m in await _notices(w, contact_id, SCHOOL) if m["status"] == "delivered"]

        await eventually(delivered, timeout=90)
        [notice] = await delivered()
        assert notice["deliver_by"] == _iso(registration)
        assert notice["delivered_at"] <= notice["deliver_by"]

        for day in [*quiet_days, registration - timedelta(minutes=1)]:
            clock.set(day)
            await asyncio.sleep(0.8)  # four scheduler polls
            assert await _escalations(w, notice["id"]) == [], day

        clock.set(registration + timedelta(minutes=1))

        async def escalated() -> list[dict[str, Any]]:
            return await _escalations(w, notice["id"])

        await eventually(escalated, timeout=90)
        [escalation] = await escalated()
        assert escalation["recipient"]["role"] == "education_safeguarding"
        assert "Oakfield Primary School has not acknowledged" in escalation["title"]
        assert "01632 960 101" in escalation["body"]  # whom to call: the school
        marked = await w.notifications.get(f"/v1/messages/{notice['id']}", headers=SCHOOL)
        assert marked.json()["escalated_at"] == _iso(registration + timedelta(minutes=1))


async def test_a_notice_acknowledged_before_registration_is_not_escalated(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    clock = ManualClock(FRIDAY_NIGHT)
    async with world(database_url, bootstrap, tmp_path, clock=clock) as w:
        child = unique_child(school_urn="100001")
        await _school_knows(w, child)
        contact_id = await _incident(w, [child], FRIDAY_NIGHT - timedelta(hours=1))

        async def delivered() -> list[dict[str, Any]]:
            return [m for m in await _notices(w, contact_id, SCHOOL) if m["status"] == "delivered"]

        await eventually(delivered, timeout=90)
        [notice] = await delivered()
        clock.set(MONDAY_REGISTRATION - timedelta(minutes=30))
        acknowledged = await w.notifications.post(
            f"/v1/messages/{notice['id']}/acknowledge",
            json={"acknowledged_by": "Priya, DSL"},
            headers=SCHOOL,
        )
        assert acknowledged.status_code == 200
        clock.set(MONDAY_REGISTRATION + timedelta(hours=2))
        await asyncio.sleep(1.5)
        assert await _escalations(w, notice["id"]) == []
