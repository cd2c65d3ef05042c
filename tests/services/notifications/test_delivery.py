"""Delivery end to end through Kafka, with the real SMTP server and the real webhook receiver:
the referrer kept in the loop, the MASH manager told of every missed deadline; retries then
success; retries then the dead-letter store and a re-send; redelivered events make one message;
the receiver verifies each signed webhook and rejects a replay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from services.notifications.webhooks import WebhookRejected, WebhookVerifier
from shared.clock import ManualClock
from shared.events.topics import Topic
from tests.services.notifications.support import (
    DSL_MAILBOX,
    MASH_MAILBOX,
    NEW_SECRET,
    OLD_SECRET,
    World,
    referral_about,
    unique_child,
    world,
)
from tests.support.kafka import eventually, read_topic
from tests.support.tokens import bearer

NOTIFY = ["threadline:referrals", "threadline:notifications"]
SCHOOL = bearer(organisation="100001", audience=NOTIFY)
OTHER_SCHOOL = bearer(organisation="100002", audience=NOTIFY)
MASH = bearer(
    organisation="MASH-DEMO", agency="mash", scopes="referrals:read mash:triage", audience=NOTIFY
)


async def _refer(w: World, **overrides: Any) -> dict[str, Any]:
    body = referral_about(unique_child(school_urn="100001"), **overrides)
    response = await w.referrals.post("/v1/referrals", json=body, headers=SCHOOL)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _of_referral(
    w: World, referral_id: str, kind: str, headers: dict[str, str] = SCHOOL
) -> list[dict[str, Any]]:
    return [
        m
        for m in await w.message(headers, referral_id=referral_id, kind=kind)
        if m["status"] in {"delivered", "refused", "failed"}
    ]


async def _one(w: World, referral_id: str, kind: str) -> dict[str, Any]:
    async def arrived() -> list[dict[str, Any]]:
        return await _of_referral(w, referral_id, kind)

    await eventually(arrived, timeout=90)
    [message] = await arrived()
    return message


async def test_the_referrer_hears_of_the_acknowledgement_the_decision_and_the_feedback(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    async with world(database_url, bootstrap, tmp_path, linking=False) as w:
        referral = await _refer(w)
        rid, reference = referral["id"], referral["reference"]
        acked = await w.referrals.post(
            f"/v1/referrals/{rid}/acknowledge", json={"acknowledged_by": "Sam, MASH"}, headers=MASH
        )
        assert acked.status_code == 200, acked.text
        acknowledgement = await _one(w, rid, "referral.acknowledged")
        assert acknowledgement["title"] == f"Your referral {reference} has been received"
        assert "within 3 working days, follow it up" in acknowledgement["body"]
        assert "01632 960 001" in acknowledgement["body"]  # the MASH duty line
        assert acknowledgement["disclosure"] is None  # it tells them nothing new about anyone
        assert {d["channel"] for d in acknowledgement["deliveries"]} == {"email", "webhook"}

        decided = await w.referrals.post(
            f"/v1/referrals/{rid}/decision",
            json={"decision": "early_help", "reason": "Family agree.", "decided_by": "Ali"},
            headers=MASH,
        )
        assert decided.status_code == 200, decided.text
        decision = await _one(w, rid, "referral.decided")
        assert "an offer of early help to the family" in decision["body"]
        # The outcome is the referral's personal data: the consent service decided it.
        assert decision["disclosure"]["outcome"] == "share"
        assert decision["disclosure"]["lawful_basis"] == "public_task"
        assert "Family agree." not in decision["body"]  # the MASH's reasons stay with the MASH

        given = await w.referrals.post(
            f"/v1/referrals/{rid}/feedback",
            json={"message": "Early help offered; the family agreed.", "given_by": "Ali"},
            headers=MASH,
        )
        assert given.status_code == 200, given.text
        feedback = await _one(w, rid, "referral.feedback")
        assert feedback["title"] == f"Feedback on your referral {reference}"
        assert "Early help offered" not in feedback["body"]  # read in Threadline, not in mail

        subjects = [mail.subject for mail in w.smtp.to(DSL_MAILBOX)]
        for message in (acknowledgement, decision, feedback):
            assert message["title"] in subjects
            assert len(w.receiver.for_message(message["id"])) == 1
        # Another school hears nothing of this referral.
        assert await w.message(OTHER_SCHOOL, referral_id=rid) == []


async def test_every_missed_deadline_reaches_the_mash_manager_and_the_referrer_may_chase(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    # Monday 9 November 2026, 10:00: acknowledgement and decision are due by the end of
    # Tuesday; a telephone referral's written follow-up 48 hours after it was made.
    clock = ManualClock(datetime(2026, 11, 9, 10, 0, tzinfo=UTC))
    async with world(database_url, bootstrap, tmp_path, clock=clock, linking=False) as w:
        body = referral_about(unique_child(school_urn="100001"))
        body["referrer"]["raised_via"] = "phone"
        response = await w.referrals.post("/v1/referrals", json=body, headers=SCHOOL)
        assert response.status_code == 201, response.text
        referral = response.json()
        rid, reference = referral["id"], referral["reference"]
        await asyncio.sleep(1.0)
        clock.set(datetime(2026, 11, 11, 11, 0, tzinfo=UTC))  # Wednesday: past both, and 48 h

        async def missed() -> list[dict[str, Any]]:
            return await _of_referral(w, rid, "deadline.missed", MASH)

        await eventually(lambda: _count(missed, 3), timeout=90)
        deadlines = {m["details"]["deadline"]: m for m in await missed()}
        assert set(deadlines) == {"acknowledgement", "decision", "phone_follow_up"}
        escalation = deadlines["acknowledgement"]
        assert escalation["recipient"]["role"] == "mash_manager"
        assert reference in escalation["title"]
        assert "Nobody in the MASH has picked it up yet" in escalation["body"]
        assert "Oakfield Primary School" in escalation["body"]  # who referred
        assert {m.subject for m in w.smtp.to(MASH_MAILBOX)} >= {
            m["title"] for m in deadlines.values()
        }

        chase = await _of_referral(w, rid, "referral.overdue")
        assert {m["details"]["deadline"] for m in chase} == {"acknowledgement", "decision"}
        assert all("Please follow this up" in m["body"] for m in chase)
        [prompt] = await _of_referral(w, rid, "referral.phone_confirmation")
        assert prompt["title"] == (f"Please confirm your telephone referral {reference} in writing")

        # Once someone holds the referral, the next escalation names them.
        acked = await w.referrals.post(
            f"/v1/referrals/{rid}/acknowledge", json={"acknowledged_by": "Sam Duty"}, headers=MASH
        )
        assert acked.status_code == 200
        await asyncio.sleep(1.0)
        clock.set(datetime(2026, 11, 16, 9, 0, tzinfo=UTC))  # past the feedback deadline too

        async def feedback_missed() -> list[dict[str, Any]]:
            return [m for m in await missed() if m["details"]["deadline"] == "feedback"]

        await eventually(feedback_missed, timeout=90)
        [late] = await feedback_missed()
        assert "It is held by Sam Duty." in late["body"]


async def _count(found: Any, wanted: int) -> bool:
    return len(await found()) >= wanted


async def test_a_failing_webhook_and_mailbox_are_retried_until_they_take_it(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    async with world(database_url, bootstrap, tmp_path, linking=False) as w:
        w.receiver.fail_first = 2  # 503 twice, then 200
        w.smtp.refuse_first = 1  # 451 once, then 250
        referral = await _refer(w)
        acked = await w.referrals.post(
            f"/v1/referrals/{referral['id']}/acknowledge",
            json={"acknowledged_by": "Sam, MASH"},
            headers=MASH,
        )
        assert acked.status_code == 200
        message = await _one(w, referral["id"], "referral.acknowledged")
        assert message["status"] == "delivered"
        by_channel = {d["channel"]: d for d in message["deliveries"]}
        assert by_channel["webhook"]["attempts"] == 3
        assert by_channel["email"]["attempts"] == 2
        mine = [h for b, h in w.receiver.requests if message["id"].encode() in b]
        # The same webhook id on every attempt, so the receiver applies it once.
        assert len(mine) == 3 and len({h["webhook-id"] for h in mine}) == 1
        assert len(w.receiver.for_message(message["id"])) == 1
        assert [m.subject for m in w.smtp.to(DSL_MAILBOX)].count(message["title"]) == 1


async def test_retries_run_out_then_the_dead_letter_is_visible_and_can_be_resent(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    async with world(database_url, bootstrap, tmp_path, linking=False) as w:
        w.receiver.fail_always = True
        referral = await _refer(w)
        await w.referrals.post(
            f"/v1/referrals/{referral['id']}/acknowledge",
            json={"acknowledged_by": "Sam, MASH"},
            headers=MASH,
        )
        message = await _one(w, referral["id"], "referral.acknowledged")
        assert message["status"] == "failed"
        webhook = next(d for d in message["deliveries"] if d["channel"] == "webhook")
        assert webhook["status"] == "failed" and webhook["attempts"] == 4
        assert webhook["last_error"] == "webhook answered 503"
        email = next(d for d in message["deliveries"] if d["channel"] == "email")
        assert email["status"] == "delivered"

        # Visible to the MASH manager, and to the sender (the MASH), not to another school.
        listed = await w.notifications.get("/v1/dead-letters", headers=MASH)
        [dead] = [d for d in listed.json()["items"] if d["message_id"] == message["id"]]
        assert (dead["channel"], dead["attempts"]) == ("webhook", 4)
        other = await w.notifications.get("/v1/dead-letters", headers=OTHER_SCHOOL)
        assert all(d["message_id"] != message["id"] for d in other.json()["items"])
        # Announced on Kafka for anyone who watches failures.
        failed = await read_topic(
            bootstrap,
            Topic.NOTIFICATIONS.value,
            until=lambda found: bool(found),
            keep=lambda record: message["id"].encode() in record.value,
        )
        assert b'"channel":"webhook"' in failed[0].value.replace(b" ", b"")

        refused = await w.notifications.post(
            f"/v1/dead-letters/{dead['id']}/resend", json={"resent_by": ""}, headers=MASH
        )
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "resent_by"
        w.receiver.fail_always = False
        resent = await w.notifications.post(
            f"/v1/dead-letters/{dead['id']}/resend",
            json={"resent_by": "Jordan, MASH manager"},
            headers=MASH,
        )
        assert resent.status_code == 200, resent.text
        assert resent.json()["resent_by"] == "Jordan, MASH manager"

        async def delivered() -> bool:
            found = await w.notifications.get(f"/v1/messages/{message['id']}", headers=MASH)
            return bool(found.json()["status"] == "delivered")

        await eventually(delivered, timeout=90)
        assert len(w.receiver.for_message(message["id"])) == 1
        again = await w.notifications.post(
            f"/v1/dead-letters/{dead['id']}/resend", json={"resent_by": "Jordan"}, headers=MASH
        )
        assert again.status_code == 409


async def test_a_redelivered_event_makes_one_message(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    async with world(database_url, bootstrap, tmp_path, linking=False) as w:
        referral = await _refer(w)
        await w.referrals.post(
            f"/v1/referrals/{referral['id']}/acknowledge",
            json={"acknowledged_by": "Sam, MASH"},
            headers=MASH,
        )
        first = await _one(w, referral["id"], "referral.acknowledged")
        [record] = await read_topic(
            bootstrap,
            Topic.REFERRALS.value,
            until=lambda found: bool(found),
            keep=lambda r: (
                r.key == referral["id"].encode()
                and (dict(r.headers).get("ce_type") or b"") == b"referral.acknowledged"
            ),
        )
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for _ in range(3):  # the broker delivers it again, three times
                await producer.send_and_wait(
                    record.topic, record.value, key=record.key, headers=list(record.headers)
                )
        finally:
            await producer.stop()
        await asyncio.sleep(3.0)
        assert [
            m["id"] for m in await _of_referral(w, referral["id"], "referral.acknowledged")
        ] == [first["id"]]
        assert len(w.receiver.for_message(first["id"])) == 1
        assert [m.subject for m in w.smtp.to(DSL_MAILBOX)].count(first["title"]) == 1


async def test_the_receiver_verifies_each_webhook_and_rejects_a_replay(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    async with world(database_url, bootstrap, tmp_path, linking=False) as w:
        referral = await _refer(w)
        await w.referrals.post(
            f"/v1/referrals/{referral['id']}/acknowledge",
            json={"acknowledged_by": "Sam, MASH"},
            headers=MASH,
        )
        message = await _one(w, referral["id"], "referral.acknowledged")
        [(body, headers)] = [(b, h) for b, h in w.receiver.requests if message["id"].encode() in b]
        # Signed with the new secret and the old one, while the endpoint rotates.
        assert len(headers["webhook-signature"].split(" ")) == 2
        assert (
            WebhookVerifier([OLD_SECRET]).verify(body, headers).webhook_id
            == (headers["webhook-id"])
        )
        verified = WebhookVerifier([NEW_SECRET]).verify(body, headers)
        assert verified.payload["data"]["message_id"] == message["id"]

        async with httpx_client() as http:
            # A replay within the tolerance is recognised and not applied again ...
            replay = await http.post(w.receiver.url, content=body, headers=headers)
            assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
            # ... tampered with, it fails the signature ...
            forged = await http.post(
                w.receiver.url, content=body.replace(b"received", b"rejected"), headers=headers
            )
            assert forged.status_code == 401
        assert len(w.receiver.for_message(message["id"])) == 1
        # ... and later than the tolerance, it is refused outright.
        later = ManualClock(datetime.now(UTC) + timedelta(minutes=6))
        try:
            WebhookVerifier([NEW_SECRET], clock=later).verify(body, headers)
        except WebhookRejected as refusal:
            assert refusal.status == 401 and "too old" in refusal.reason
        else:
            raise AssertionError("a six-minute-old webhook was accepted")


def httpx_client() -> Any:
    import httpx

    return httpx.AsyncClient(timeout=10)


async def test_without_an_answer_from_the_decision_point_nothing_is_sent_until_a_retry(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    up = False
    async with world(
        database_url,
        bootstrap,
        tmp_path,
        linking=False,
        decision_point_up=lambda: up,
        decision_max_attempts=2,
    ) as w:
        referral = await _refer(w)
        rid = referral["id"]
        decided = await w.referrals.post(
            f"/v1/referrals/{rid}/decision",
            json={"decision": "early_help", "reason": "Family agree.", "decided_by": "Ali"},
            headers=MASH,
        )
        assert decided.status_code == 200

        async def failed() -> list[dict[str, Any]]:
            found = await w.message(MASH, referral_id=rid, kind="referral.decided")
            return [m for m in found if m["status"] == "failed"]

        await eventually(failed, timeout=90)
        [message] = await failed()
        assert "decision point unreachable" in message["last_error"]
        assert message["deliveries"] == [] and message["disclosure"]["outcome"] is None
        # Not sent: the school neither sees it nor receives it.
        assert await w.message(SCHOOL, referral_id=rid, kind="referral.decided") == []
        assert w.receiver.for_message(message["id"]) == []
        not_theirs = await w.notifications.post(
            f"/v1/messages/{message['id']}/retry", headers=OTHER_SCHOOL
        )
        assert not_theirs.status_code == 404

        up = True
        retried = await w.notifications.post(f"/v1/messages/{message['id']}/retry", headers=MASH)
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] == "queued"
        delivered = await _one(w, rid, "referral.decided")
        assert delivered["status"] == "delivered"
        assert delivered["disclosure"]["outcome"] == "share"
        assert len(w.receiver.for_message(message["id"])) == 1
        again = await w.notifications.post(f"/v1/messages/{message['id']}/retry", headers=MASH)
        assert again.status_code == 409
