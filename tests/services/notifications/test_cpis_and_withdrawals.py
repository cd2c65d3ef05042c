"""CP-IS end to end: an unscheduled-care attendance of a child on a child-protection plan, or
looked after, alerts the allocated social worker and answers the attending clinician whom to
call; nothing is said about a child with no plan. Consent withdrawals reach everyone who was
told about the child under an earlier disclosure."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.services.consent_support import MASH_ASKS, consent_body
from tests.services.notifications.support import (
    DSL_MAILBOX,
    HEALTH_MAILBOX,
    SOCIAL_CARE_MAILBOX,
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
HEALTH = bearer(organisation="RDEMO", agency="health", scopes="contacts:write", audience=NOTIFY)
LOCAL_AUTHORITY = bearer(
    organisation="DEMO-LA", agency="local_authority", scopes="contacts:write", audience=NOTIFY
)
POLICE = bearer(organisation="DEMO-PF", agency="police", scopes="contacts:write", audience=NOTIFY)
SCHOOL = bearer(organisation="100001", audience=NOTIFY)
WORKER = {
    "name": "Kim Social",
    "team": "Child Protection Team North",
    "telephone": "01632 960 250",
    "email": "kim.social@demo-la.example.org",
}


def _days_ago(days: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).date().isoformat()


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def _contact(w: World, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    response = await w.referrals.post("/v1/contacts", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _status(
    w: World, child: dict[str, Any], kind: str, change: str = "started", days: int = 30
) -> None:
    if kind == "child_protection_plan":
        body = {"category": "neglect"}
    else:
        body = {"legal_status": "care_order", "placement_type": "foster_care"}
    recorded = await _contact(
        w,
        {
            "type": kind,
            "change": change,
            "effective_date": _days_ago(days),
            "local_authority_code": "831",
            "allocated_worker": WORKER,
            "subjects": [child],
            **body,
        },
        LOCAL_AUTHORITY,
    )
    await linked_in_notifications(w.database_url, [s["subject_id"] for s in recorded["subjects"]])


async def _attends(w: World, child: dict[str, Any]) -> str:
    attendance = await _contact(
        w,
        {
            "type": "unscheduled_care_attendance",
            "attended_at": _iso(datetime.now(UTC) - timedelta(hours=2)),
            "setting": "emergency_department",
            "hospital_site_code": "rtg01",
            "presenting_complaint": "Fall from a climbing frame; bruising to the upper arm.",
            "injury": True,
            "accompanied_by": "mother",
            "safeguarding_concern": True,
            "subjects": [child],
        },
        HEALTH,
    )
    return str(attendance["id"])


async def _about(w: World, contact_id: str, headers: dict[str, str], kind: str) -> list[Any]:
    return [
        m
        for m in await w.message(headers, kind=kind)
        if m["contact_id"] == contact_id and m["status"] == "delivered"
    ]


async def test_a_child_on_a_plan_at_a_and_e_alerts_the_social_worker_and_answers_the_clinician(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    async with world(database_url, bootstrap, tmp_path) as w:
        child = unique_child()
        await _status(w, child, "child_protection_plan")
        contact_id = await _attends(w, child)
        name = f"{child['given_names']} {child['family_name']}"

        async def alerted() -> list[Any]:
            return await _about(w, contact_id, LOCAL_AUTHORITY, "cpis.alert")

        await eventually(alerted, timeout=90)
        [alert] = await alerted()
        assert alert["recipient"] == {
            "organisation_code": "DEMO-LA",
            "agency": "local_authority",
            "role": "social_worker",
            "name": "Kim Social",
        }
        assert alert["title"] == f"{name} attended an emergency department (A&E)"
        assert "who has a child protection plan" in alert["body"]
        assert "Demo NHS Foundation Trust" in alert["body"] and "01632 960 300" in alert["body"]
        assert "climbing frame" not in alert["body"]  # the presenting complaint stays sealed
        assert alert["disclosure"]["outcome"] == "share"
        assert alert["acknowledge_by"] is not None
        # The team's mailbox, and the allocated worker's own.
        assert {d["address"] for d in alert["deliveries"]} == {
            SOCIAL_CARE_MAILBOX,
            WORKER["email"],
        }
        assert "worker_email" not in alert["details"]

        async def answered() -> list[Any]:
            return await _about(w, contact_id, HEALTH, "cpis.answer")

        await eventually(answered, timeout=90)
        [answer] = await answered()
        assert answer["recipient"]["organisation_code"] == "RDEMO"
        assert answer["recipient"]["role"] == "clinician"
        assert answer["title"] == f"{name} has a child protection plan"
        assert "Kim Social (Child Protection Team North) on 01632 960 250" in answer["body"]
        assert "out of hours, the emergency duty team on 01632 960 999" in answer["body"]
        assert "neglect" not in answer["body"]  # not the plan's category
        assert [m.subject for m in w.smtp.to(HEALTH_MAILBOX)].count(answer["title"]) == 1


async def test_a_looked_after_child_is_flagged_and_a_child_without_a_plan_is_not(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    async with world(database_url, bootstrap, tmp_path) as w:
        looked_after = unique_child()
        await _status(w, looked_after, "looked_after_status")
        ended = unique_child()
        await _status(w, ended, "child_protection_plan", days=60)
        await _status(w, ended, "child_protection_plan", change="ended", days=10)
        without = unique_child()

        flagged = await _attends(w, looked_after)
        not_flagged = [await _attends(w, ended), await _attends(w, without)]

        async def alerted() -> list[Any]:
            return await _about(w, flagged, LOCAL_AUTHORITY, "cpis.alert")

        await eventually(alerted, timeout=90)
        [alert] = await alerted()
        assert "who is in the care of the local authority" in alert["body"]
        await asyncio.sleep(2.0)
        for contact_id in not_flagged:
            assert await _about(w, contact_id, LOCAL_AUTHORITY, "cpis.alert") == []
            assert await _about(w, contact_id, HEALTH, "cpis.answer") == []


async def test_those_told_about_a_child_hear_when_consent_is_withdrawn(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    async with world(database_url, bootstrap, tmp_path) as w:
        child = unique_child(school_urn="100001")
        response = await w.referrals.post(
            "/v1/referrals", json=referral_about(child), headers=SCHOOL
        )
        assert response.status_code == 201, response.text
        [referred] = response.json()["children"]
        await linked_in_notifications(w.database_url, [referred["subject_id"]])
        given = await w.consent.post(
            "/v1/consents", json=consent_body(referred["subject_id"]), headers=MASH_ASKS
        )
        assert given.status_code == 201, given.text
        police_view = {k: v for k, v in child.items() if k != "school"}
        incident = await _contact(
            w,
            police_incident([police_view], _iso(datetime.now(UTC) - timedelta(hours=1))),
            POLICE,
        )

        async def told() -> list[Any]:
            return await _about(w, incident["id"], SCHOOL, "encompass.notice")

        await eventually(told, timeout=90)
        [notice] = await told()

        withdrawn = await w.consent.post(
            f"/v1/consents/{given.json()['id']}/withdraw",
            json={
                "withdrawn_by": {"name": "Sarah", "role": "mother"},
                "reason": "The family asked that nothing more is shared without asking them.",
            },
            headers=MASH_ASKS,
        )
        assert withdrawn.status_code == 200, withdrawn.text

        async def heard() -> list[Any]:
            return [
                m
                for m in await w.message(SCHOOL, kind="consent.withdrawn")
                if notice["id"] in m["details"]["notifications"] and m["status"] == "delivered"
            ]

        await eventually(heard, timeout=90)
        [withdrawal] = await heard()
        assert withdrawal["title"] == "Consent to share information has been withdrawn"
        assert notice["id"] in withdrawal["body"] and notice["title"] in withdrawal["body"]
        assert "another lawful basis" in withdrawal["body"]
        assert "nothing more is shared" not in withdrawal["body"]  # not the reason
        assert withdrawal["disclosure"]["lawful_basis"] == "legal_obligation"
        assert withdrawal["title"] in [m.subject for m in w.smtp.to(DSL_MAILBOX)]


async def test_a_bad_allocated_worker_is_refused_naming_the_field(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    async with world(database_url, bootstrap, tmp_path, linking=False) as w:
        body = {
            "type": "child_protection_plan",
            "change": "started",
            "effective_date": _days_ago(3),
            "category": "neglect",
            "local_authority_code": "831",
            "subjects": [unique_child()],
        }
        for worker, field in [
            ({"name": "Kim", "telephone": "call me"}, "allocated_worker.telephone"),
            ({"name": "Kim", "email": "kim at demo"}, "allocated_worker.email"),
            ({"team": "North"}, "allocated_worker.name"),
            ({"name": "Kim", "pager": "1"}, "allocated_worker.pager"),
        ]:
            response = await w.referrals.post(
                "/v1/contacts", json={**body, "allocated_worker": worker}, headers=LOCAL_AUTHORITY
            )
            assert response.status_code == 422, response.text
            assert field in [e["field"] for e in response.json()["errors"]]
