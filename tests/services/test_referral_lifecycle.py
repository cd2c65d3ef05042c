"""A referral's life in the MASH: every decision, every deadline met, missed and cancelled,
on the working-day calendar with the clock in the test's hands."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from services.referrals.app import create_app
from services.referrals.models import plumbing
from shared.clock import ManualClock
from shared.db import Database
from tests.services.consent_support import (
    DPO,
    SCHOOL_ASKS,
    consent_app,
    consent_body,
    decision_point,
)
from tests.services.factories import referral_body
from tests.support.apps import referrals_settings, serving
from tests.support.kafka import eventually
from tests.support.tokens import MASH, SCHOOL

# Maundy Thursday 2026, 14:00 BST. Good Friday (3 April) and Easter Monday (6 April) are bank
# holidays, so one working day later is the end of Tuesday 7 April, three is the end of Thursday 9.
RECEIVED = datetime(2026, 4, 2, 13, 0, tzinfo=UTC)
END_OF_TUESDAY = "2026-04-07T23:00:00Z"
END_OF_THURSDAY = "2026-04-09T23:00:00Z"
SATURDAY_48_HOURS_ON = "2026-04-04T13:00:00Z"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(RECEIVED)


@pytest.fixture
async def consent_api(
    database_url: str, bootstrap: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The consent service, whose decision point decides every feedback to a referrer."""
    async with serving(consent_app(database_url, bootstrap, tmp_path)) as client:
        yield client


@pytest.fixture
async def api(
    database_url: str, bootstrap: str, clock: ManualClock, consent_api: httpx.AsyncClient
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        referrals_settings(database_url, bootstrap),
        clock=clock,
        configure_logs=False,
        decide=decision_point(consent_api),
    )
    async with serving(app, headers=MASH) as client:
        yield client


async def events_of(database: Database, referral_id: str) -> list[str]:
    async with database.transaction() as session:
        rows = await session.execute(
            select(plumbing.outbox.c.event_type)
            .where(plumbing.outbox.c.partition_key == referral_id)
            .order_by(plumbing.outbox.c.seq)
        )
        return [row.event_type for row in rows]


def deadlines(referral: dict) -> dict[str, tuple[str, str]]:
    return {d["kind"]: (d["due_at"], d["status"]) for d in referral["deadlines"]}


async def act(api: httpx.AsyncClient, referral_id: str, action: str, body: dict) -> dict:
    response = await api.post(f"/v1/referrals/{referral_id}/{action}", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


DECISIONS = [
    "no_further_action",
    "advice_and_signposting",
    "early_help",
    "section_17_assessment",
    "section_47_strategy_discussion",
    "already_open_to_a_worker",
]


@pytest.mark.parametrize("decision", DECISIONS)
async def test_a_referral_through_each_decision_meets_every_deadline_on_time(
    api: httpx.AsyncClient, database: Database, decision: str
) -> None:
    posted = await api.post("/v1/referrals", json=referral_body(), headers=SCHOOL)
    referral = posted.json()
    rid = referral["id"]
    assert deadlines(referral) == {
        "acknowledgement": (END_OF_TUESDAY, "pending"),
        "decision": (END_OF_TUESDAY, "pending"),
        "feedback": (END_OF_THURSDAY, "pending"),
    }
    await act(api, rid, "acknowledge", {"acknowledged_by": "Sam, duty worker"})
    rated = await act(
        api, rid, "rating", {"rag": "amber", "reason": "Repeat neglect.", "rated_by": "Sam"}
    )
    assert rated["rag"] == "amber"
    decided = await act(
        api,
        rid,
        "decision",
        {"decision": decision, "reason": "Threshold document, level 3.", "decided_by": "Ali"},
    )
    assert (decided["status"], decided["decision"]) == ("decided", decision)
    given = await act(
        api,
        rid,
        "feedback",
        {"message": f"We have decided: {decision}.", "given_by": "Ali, MASH"},
    )
    assert [f["message"] for f in given["feedback"]] == [f"We have decided: {decision}."]
    expected_events = [
        "referral.received",
        "referral.acknowledged",
        "referral.rated",
        "referral.decided",
        "referral.feedback_sent",
    ]
    assessed = decision in ("section_17_assessment", "section_47_strategy_discussion")
    if assessed:
        assert deadlines(given)["assessment"][1] == "pending"
        given = await act(api, rid, "assessment-completion", {"completed_by": "Social worker"})
        assert given["status"] == "assessment_completed"
        expected_events.append("referral.assessment_completed")
    else:
        refused = await api.post(
            f"/v1/referrals/{rid}/assessment-completion", json={"completed_by": "Someone"}
        )
        assert refused.status_code == 409
    assert {kind: status for kind, (_, status) in deadlines(given).items()} == {
        "acknowledgement": "met",
        "decision": "met",
        "feedback": "met",
        **({"assessment": "met"} if assessed else {}),
    }
    assert [a["action"] for a in given["history"]] == [
        "acknowledged",
        "rated",
        "decided",
        "feedback",
        *(["assessment_completed"] if assessed else []),
    ]
    assert given["history"][1]["text"] == "Repeat neglect."
    assert await events_of(database, rid) == expected_events

    # The referrer sees status, deadlines and feedback, not the MASH's rating or its reasons.
    seen_by_school = (await api.get(f"/v1/referrals/{rid}", headers=SCHOOL)).json()
    assert seen_by_school["decision"] == decision
    assert seen_by_school["feedback"][0]["message"] == f"We have decided: {decision}."
    assert seen_by_school["rag"] is None and seen_by_school["history"] is None


async def test_actions_out_of_order_or_by_others_are_refused(api: httpx.AsyncClient) -> None:
    rid = (await api.post("/v1/referrals", json=referral_body(), headers=SCHOOL)).json()["id"]
    early = await api.post(
        f"/v1/referrals/{rid}/feedback", json={"message": "Hello", "given_by": "Ali"}
    )
    assert early.status_code == 409 and "decide first" in early.json()["detail"]
    assert (
        await api.post(
            f"/v1/referrals/{rid}/reopening", json={"reason": "New info", "reopened_by": "Ali"}
        )
    ).status_code == 409
    by_school = await api.post(
        f"/v1/referrals/{rid}/decision",
        json={"decision": "early_help", "reason": "x", "decided_by": "Jo"},
        headers=SCHOOL,
    )
    assert by_school.status_code == 403
    bad = await api.post(
        f"/v1/referrals/{rid}/decision",
        json={"decision": "lock_them_up", "reason": "x", "decided_by": "Ali"},
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "decision"
    await act(api, rid, "decision", {"decision": "early_help", "reason": "x", "decided_by": "Ali"})
    again = await api.post(
        f"/v1/referrals/{rid}/decision",
        json={"decision": "early_help", "reason": "x", "decided_by": "Ali"},
    )
    assert again.status_code == 409


async def test_missed_deadlines_escalate_once_and_are_shown_as_missed_then_met_late(
    api: httpx.AsyncClient, database: Database, clock: ManualClock
) -> None:
    body = referral_body()
    body["referrer"]["raised_via"] = "phone"
    referral = (await api.post("/v1/referrals", json=body, headers=SCHOOL)).json()
    rid = referral["id"]
    assert deadlines(referral)["phone_follow_up"] == (SATURDAY_48_HOURS_ON, "pending")

    # Wednesday 8 April, 01:00 BST: acknowledgement and decision are late, and so is the
    # referrer's written follow-up of the phone call.
    clock.set(datetime(2026, 4, 8, 0, 0, tzinfo=UTC))
    expected = {
        "referral.ack_overdue",
        "referral.decision_overdue",
        "referral.phone_follow_up_due",
    }

    async def escalated() -> bool:
        return expected <= set(await events_of(database, rid))

    await eventually(escalated, timeout=15)
    seen = (await api.get(f"/v1/referrals/{rid}")).json()
    assert {k: s for k, (_, s) in deadlines(seen).items()} == {
        "acknowledgement": "missed",
        "decision": "missed",
        "feedback": "pending",
        "phone_follow_up": "missed",
    }

    decided = await act(
        api,
        rid,
        "decision",
        {"decision": "section_47_strategy_discussion", "reason": "x", "decided_by": "Ali"},
    )
    states = deadlines(decided)
    assert states["acknowledgement"][1] == states["decision"][1] == "met_late"
    # 45 working days from Wednesday 8 April 2026, skipping the May bank holidays (4 and 25 May).
    assert states["assessment"] == ("2026-06-12T23:00:00Z", "pending")

    clock.set(datetime(2026, 4, 9, 21, 0, tzinfo=UTC))  # Thursday 22:00 BST: just in time
    given = await act(api, rid, "feedback", {"message": "Strategy meeting today.", "given_by": "A"})
    states = deadlines(given)
    assert states["feedback"][1] == "met"
    assert states["phone_follow_up"][1] == "missed"  # the miss stays on the record

    events = await events_of(database, rid)
    for event_type in expected:
        assert events.count(event_type) == 1, events
    assert "referral.feedback_overdue" not in events


async def test_reopening_starts_new_clocks_and_cancels_the_assessment(
    api: httpx.AsyncClient, database: Database
) -> None:
    rid = (await api.post("/v1/referrals", json=referral_body(), headers=SCHOOL)).json()["id"]
    await act(
        api,
        rid,
        "decision",
        {"decision": "section_17_assessment", "reason": "x", "decided_by": "Ali"},
    )
    reopened = await act(
        api, rid, "reopening", {"reason": "The school rang again.", "reopened_by": "Ali"}
    )
    assert (reopened["status"], reopened["decision"]) == ("reopened", None)
    kinds = [(d["kind"], d["status"]) for d in reopened["deadlines"]]
    assert ("assessment", "cancelled") in kinds
    assert kinds.count(("decision", "pending")) == 1
    assert kinds.count(("feedback", "pending")) == 2  # the first feedback clock still runs
    decided = await act(
        api, rid, "decision", {"decision": "early_help", "reason": "y", "decided_by": "Ali"}
    )
    assert [a["action"] for a in decided["history"]] == [
        "acknowledged",
        "decided",
        "reopened",
        "decided",
    ]
    assert (await events_of(database, rid))[-2:] == ["referral.reopened", "referral.decided"]


async def test_a_retried_feedback_with_the_same_idempotency_key_is_given_once(
    api: httpx.AsyncClient, consent_api: httpx.AsyncClient, database: Database
) -> None:
    """The API committed the feedback and died before answering; the MASH's client sends it
    again with the same key: one feedback, one ``referral.feedback_sent``, one message to the
    referrer. Another key is another feedback (a second update to the referrer)."""
    rid = (await api.post("/v1/referrals", json=referral_body(), headers=SCHOOL)).json()["id"]
    await act(api, rid, "acknowledge", {"acknowledged_by": "Ali"})
    await act(api, rid, "decision", {"decision": "early_help", "reason": "x", "decided_by": "Ali"})
    body = {"message": "Early help offered.", "given_by": "Ali"}
    first, retried = [
        await api.post(
            f"/v1/referrals/{rid}/feedback", json=body, headers={"Idempotency-Key": "fb-000001"}
        )
        for _ in range(2)
    ]
    assert first.status_code == retried.status_code == 200, retried.text
    assert [f["message"] for f in retried.json()["feedback"]] == ["Early help offered."]
    assert (await events_of(database, rid)).count("referral.feedback_sent") == 1

    update = await api.post(
        f"/v1/referrals/{rid}/feedback",
        json={"message": "Strategy meeting today.", "given_by": "Ali"},
        headers={"Idempotency-Key": "fb-000002"},
    )
    assert len(update.json()["feedback"]) == 2
    assert (await events_of(database, rid)).count("referral.feedback_sent") == 2
    # Each feedback was decided once: the retry found its feedback given and asked nothing.
    child = update.json()["children"][0]["subject_id"]
    assert len(await feedback_decisions(consent_api, child)) == 2
    bad = await api.post(
        f"/v1/referrals/{rid}/feedback", json=body, headers={"Idempotency-Key": "no"}
    )
    assert bad.status_code == 422 and "Idempotency-Key" in bad.text


# -- feedback is a disclosure: the consent service's decision point decides it ----------------


async def feedback_decisions(consent_api: httpx.AsyncClient, child: str) -> list[dict]:
    """The ledger's decisions on feedback about ``child``, as the DPO lists them."""
    response = await consent_api.get(
        "/v1/dpo/decisions",
        params={"subject_id": child, "purpose": "referral_feedback"},
        headers=DPO,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def decided_referral(api: httpx.AsyncClient) -> tuple[str, list[str]]:
    referral = (await api.post("/v1/referrals", json=referral_body(), headers=SCHOOL)).json()
    rid = referral["id"]
    await act(api, rid, "acknowledge", {"acknowledged_by": "Ali"})
    await act(api, rid, "decision", {"decision": "early_help", "reason": "x", "decided_by": "Ali"})
    return rid, [child["subject_id"] for child in referral["children"]]


async def test_feedback_is_decided_by_the_decision_point_and_recorded_in_the_ledger(
    api: httpx.AsyncClient, consent_api: httpx.AsyncClient, database: Database
) -> None:
    rid, children = await decided_referral(api)
    given = await act(api, rid, "feedback", {"message": "Early help offered.", "given_by": "Ali"})
    [feedback] = given["feedback"]
    decision_id = feedback["disclosure_decision_id"]
    assert decision_id is not None

    [entry] = await feedback_decisions(consent_api, children[0])
    assert entry["entry_id"] == decision_id and entry["outcome"] == "share"
    assert (entry["from_agency"], entry["to_agency"]) == ("mash", "school")
    assert sorted(entry["subject_ids"]) == sorted(children)
    assert entry["lawful_basis"] == "public_task"
    # The referrer reads the feedback with the decision that let it through.
    seen_by_school = (await api.get(f"/v1/referrals/{rid}", headers=SCHOOL)).json()
    assert seen_by_school["feedback"][0]["disclosure_decision_id"] == decision_id
    async with database.transaction() as session:
        payload = await session.scalar(
            select(plumbing.outbox.c.data)
            .where(plumbing.outbox.c.partition_key == rid)
            .where(plumbing.outbox.c.event_type == "referral.feedback_sent")
        )
    assert payload["disclosure_decision_id"] == decision_id


async def test_feedback_a_consent_refusal_covers_is_refused_and_stored_only_once_overridden(
    api: httpx.AsyncClient, consent_api: httpx.AsyncClient, database: Database
) -> None:
    """The mother refused consent to the MASH telling the school anything more: the feedback is
    refused (403, with the decision's reasons), nothing is stored and the clock runs on; the
    refusal is in the ledger. An override needs a manager's approval (422 naming it without);
    with it, the feedback is given."""
    rid, children = await decided_referral(api)
    refusal = consent_body(
        uuid.UUID(children[0]),
        status="refused",
        recipients=["school"],
        purposes=["referral_feedback"],
    )
    recorded = await consent_api.post("/v1/consents", json=refusal, headers=SCHOOL_ASKS)
    assert recorded.status_code == 201, recorded.text
    body = {"message": "Early help offered.", "given_by": "Ali"}

    refused = await api.post(f"/v1/referrals/{rid}/feedback", json=body)
    assert refused.status_code == 403, refused.text
    problem = refused.json()
    assert "consent refused" in problem["detail"] and problem["decision_id"]
    after = (await api.get(f"/v1/referrals/{rid}")).json()
    assert after["feedback"] == []
    assert deadlines(after)["feedback"][1] == "pending"
    assert "referral.feedback_sent" not in await events_of(database, rid)
    [entry] = await feedback_decisions(consent_api, children[0])
    assert (entry["entry_id"], entry["outcome"]) == (problem["decision_id"], "do_not_share")

    override = {"basis": "public_task", "reason": "The school must know early help is offered."}
    unapproved = await api.post(
        f"/v1/referrals/{rid}/feedback", json={**body, "override": override}
    )
    assert unapproved.status_code == 422, unapproved.text
    assert [e["field"] for e in unapproved.json()["errors"]] == ["override.approved_by"]
    approved = {**override, "approved_by": {"name": "Pat Manager", "role": "MASH manager"}}
    given = await act(api, rid, "feedback", {**body, "override": approved})
    [feedback] = given["feedback"]
    entries = await feedback_decisions(consent_api, children[0])
    assert [e["outcome"] for e in entries] == ["do_not_share", "share"]
    assert entries[1]["entry_id"] == feedback["disclosure_decision_id"]
    assert entries[1]["consent_status"] == "refused"
    assert deadlines(given)["feedback"][1] == "met"


async def test_without_an_answer_from_the_decision_point_no_feedback_is_given(
    database_url: str, bootstrap: str, clock: ManualClock, database: Database
) -> None:
    """No consent service (nor identity provider to get a token from): 503, nothing stored;
    never a silent share."""
    app = create_app(referrals_settings(database_url, bootstrap), clock=clock, configure_logs=False)
    async with serving(app, headers=MASH) as api:
        rid, _ = await decided_referral(api)
        response = await api.post(
            f"/v1/referrals/{rid}/feedback", json={"message": "Hello there.", "given_by": "Ali"}
        )
        assert response.status_code == 503, response.text
        assert "not recorded" in response.json()["detail"]
        assert (await api.get(f"/v1/referrals/{rid}")).json()["feedback"] == []
    assert "referral.feedback_sent" not in await events_of(database, rid)
