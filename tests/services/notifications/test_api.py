"""The notifications API as an integrator meets it: preferences choose the channels, bad input
is a 4xx naming the field and writes nothing, every read is authorised per message; and the
routing file is checked when the service starts."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from services.notifications.models import Preference
from services.notifications.routing import load
from shared.db import Database
from tests.services.notifications.support import DSL_MAILBOX, referral_about, unique_child, world
from tests.support.kafka import eventually
from tests.support.tokens import bearer

NOTIFY = ["threadline:referrals", "threadline:notifications"]
SCHOOL = bearer(organisation="100001", audience=NOTIFY)
OTHER_SCHOOL = bearer(organisation="100002", audience=NOTIFY)
MASH = bearer(
    organisation="MASH-DEMO", agency="mash", scopes="referrals:read mash:triage", audience=NOTIFY
)


async def _preferences(database_url: str) -> int:
    database = Database(database_url)
    try:
        async with database.transaction() as session:
            return int(await session.scalar(select(func.count()).select_from(Preference)) or 0)
    finally:
        await database.dispose()


async def test_a_recipients_preferences_choose_the_channels(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    async with world(database_url, bootstrap, tmp_path, linking=False) as w:
        api = w.notifications
        chose = await api.put(
            "/v1/preferences/referrer/referral.acknowledged",
            json={"channels": ["webhook"], "updated_by": "Priya, DSL"},
            headers=SCHOOL,
        )
        assert chose.status_code == 200, chose.text
        assert chose.json()["channels"] == ["webhook"]
        listed = await api.get("/v1/preferences", headers=SCHOOL)
        assert [(p["role"], p["kind"]) for p in listed.json()] == [
            ("referrer", "referral.acknowledged")
        ]
        assert (await api.get("/v1/preferences", headers=OTHER_SCHOOL)).json() == []

        response = await w.referrals.post(
            "/v1/referrals", json=referral_about(unique_child()), headers=SCHOOL
        )
        referral = response.json()
        await w.referrals.post(
            f"/v1/referrals/{referral['id']}/acknowledge",
            json={"acknowledged_by": "Sam"},
            headers=MASH,
        )

        async def delivered() -> list[dict[str, Any]]:
            found = await w.message(
                SCHOOL, referral_id=referral["id"], kind="referral.acknowledged"
            )
            return [m for m in found if m["status"] == "delivered"]

        await eventually(delivered, timeout=90)
        [message] = await delivered()
        assert [d["channel"] for d in message["deliveries"]] == ["webhook"]
        assert message["title"] not in [m.subject for m in w.smtp.to(DSL_MAILBOX)]

        forgot = await api.delete("/v1/preferences/referrer/referral.acknowledged", headers=SCHOOL)
        assert forgot.status_code == 204
        again = await api.delete("/v1/preferences/referrer/referral.acknowledged", headers=SCHOOL)
        assert again.status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/preferences/referrer/no.such_kind", {"channels": [], "updated_by": "P"}, "kind"),
        ("/v1/preferences/referrer/*", {"channels": ["fax"], "updated_by": "P"}, "channels[0]"),
        ("/v1/preferences/referrer/*", {"channels": ["email"]}, "updated_by"),
        (
            "/v1/preferences/referrer/*",
            {"channels": ["email", "email"], "updated_by": "P"},
            "channels",
        ),
        ("/v1/preferences/Not-A-Role/*", {"channels": [], "updated_by": "P"}, "path.role"),
        ("/v1/preferences/referrer/*", {"channels": [], "updated_by": "P", "x": 1}, "x"),
    ],
)
async def test_a_bad_preference_is_refused_naming_the_field_and_nothing_is_written(
    database_url: str, bootstrap: str, tmp_path: Path, path: str, body: dict[str, Any], field: str
) -> None:
    async with world(database_url, bootstrap, tmp_path, linking=False) as w:
        before = await _preferences(database_url)
        response = await w.notifications.put(path, json=body, headers=SCHOOL)
        assert response.status_code == 422, response.text
        assert field in [error["field"] for error in response.json()["errors"]]
        assert await _preferences(database_url) == before


async def test_messages_are_read_only_by_their_recipient_sender_or_the_mash(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    async with world(database_url, bootstrap, tmp_path, linking=False) as w:
        api = w.notifications
        unknown = uuid.uuid4()
        for headers in (SCHOOL, MASH):
            missing = await api.get(f"/v1/messages/{unknown}", headers=headers)
            assert missing.status_code == 404
        assert (await api.get("/v1/messages")).status_code == 401
        bad = await api.post(f"/v1/messages/{unknown}/acknowledge", json={}, headers=SCHOOL)
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == "acknowledged_by"
        wrong = await api.get("/v1/messages", params={"limit": 0}, headers=SCHOOL)
        assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "query.limit"
        status = await api.get("/v1/messages", params={"status": "lost"}, headers=SCHOOL)
        assert status.status_code == 422
        resend = await api.post(
            f"/v1/dead-letters/{unknown}/resend", json={"resent_by": "me"}, headers=SCHOOL
        )
        assert resend.status_code == 404

        referral = (
            await w.referrals.post(
                "/v1/referrals", json=referral_about(unique_child()), headers=SCHOOL
            )
        ).json()
        await w.referrals.post(
            f"/v1/referrals/{referral['id']}/acknowledge",
            json={"acknowledged_by": "Sam"},
            headers=MASH,
        )

        async def sent() -> list[dict[str, Any]]:
            return await w.message(SCHOOL, referral_id=referral["id"], box="inbox")

        await eventually(sent, timeout=90)
        [message] = await sent()
        assert (await api.get(f"/v1/messages/{message['id']}", headers=SCHOOL)).status_code == 200
        assert (await api.get(f"/v1/messages/{message['id']}", headers=MASH)).status_code == 200
        other = await api.get(f"/v1/messages/{message['id']}", headers=OTHER_SCHOOL)
        assert other.status_code == 404
        # The MASH sent it: it appears in the MASH's sent box, not in the school's.
        mash_sent = await w.message(MASH, referral_id=referral["id"], box="sent")
        assert [m["id"] for m in mash_sent] == [message["id"]]
        assert await w.message(SCHOOL, referral_id=referral["id"], box="sent") == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("agreement_id", "agreement_ids"), "partnership.agreement_id"),
        (('agency = "school"', 'agency = "church"'), "organisations.1.agency"),
        (('address = "dsl@', 'address = "dsl at '), "organisations.1.mailboxes.0.address"),
        (("secrets = [", "old_secrets = ["), "organisations.1.webhooks.0"),
        (('code = "100002"', 'code = "100001"'), "organisations listed twice"),
    ],
)
def test_a_bad_routing_file_stops_the_service_naming_the_key(
    tmp_path: Path, change: tuple[str, str], problem: str
) -> None:
    from tests.services.notifications.support import WebhookReceiver, routing_file

    receiver = WebhookReceiver("http://127.0.0.1:9/", verifier=None)  # type: ignore[arg-type]
    path = routing_file(tmp_path, receiver)
    assert load(path).partnership.mash == "MASH-DEMO"
    path.write_text(path.read_text().replace(*change, 1))
    with pytest.raises(ValueError, match=problem.replace(".", r"\.")) as refused:
        load(path)
    assert str(path) in str(refused.value)
