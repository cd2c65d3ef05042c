"""Referral intake becomes consent records (once, however often the event arrives); the DPO
audits decisions, overrides, withdrawals, integrity and a subject's export, never a narrative;
the retention job expires narratives by event and keeps the ledger; checkpoints are written by
the service's own timer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, insert, select

from services.consent import checkpoints, retention
from services.consent.jobs import CHECKPOINT_TIMER, sweep
from services.consent.models import AccessRecord, CaseSubject, ConsentRecord, ledger
from services.consent.models import plumbing as consent_plumbing
from services.referrals.app import create_app as create_referrals
from services.referrals.models import plumbing as referrals_plumbing
from shared.db import Database
from shared.events.envelope import envelope_from_attributes, to_kafka
from shared.kafka import make_producer
from tests.services.consent_support import (
    DPO,
    SCHOOL_ASKS,
    consent_app,
    consent_body,
    disclosure,
)
from tests.services.factories import OWN_WORDS, WHAT_HAPPENED, referral_body
from tests.support.apps import referrals_settings, serving
from tests.support.kafka import eventually
from tests.support.tokens import SCHOOL

APPROVER = {"name": "Sam Manager", "role": "MASH team manager"}


@pytest.fixture
async def apis(
    database_url: str, bootstrap: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    referrals = create_referrals(referrals_settings(database_url, bootstrap), configure_logs=False)
    consent = consent_app(database_url, bootstrap, tmp_path)
    async with serving(referrals, headers=SCHOOL) as referrals_api, serving(consent) as consent_api:
        yield referrals_api, consent_api


async def consents_of(database: Database, referral_id: str) -> list[ConsentRecord]:
    async with database.transaction() as session:
        return list(
            await session.scalars(
                select(ConsentRecord)
                .where(ConsentRecord.source == "referral", ConsentRecord.source_id == referral_id)
                .order_by(ConsentRecord.ledger_sequence)
            )
        )


async def test_a_referrals_consent_information_becomes_consent_records_once(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient], database: Database, bootstrap: str
) -> None:
    referrals_api, consent_api = apis
    body = referral_body(
        consent={
            "parents": {"status": "refused"},
            "child": {"status": "agreed", "competent": True},
        }
    )
    posted = await referrals_api.post("/v1/referrals", json=body)
    assert posted.status_code == 201, posted.text
    referral = posted.json()
    maya, leo = (child["subject_id"] for child in referral["children"])

    async def recorded() -> list[ConsentRecord]:
        found = await consents_of(database, referral["id"])
        return found if len(found) == 4 else []

    await eventually(recorded)
    records = await recorded()
    by_child = {
        (str(r.subject_id), r.grantor_kind): r for r in records
    }  # two children, mother (PR) and the child's own
    parent = by_child[(maya, "person_with_parental_responsibility")]
    assert parent.status == "refused"
    assert parent.grantor_description == "mother"
    assert parent.obtained_by_name == "Jo Teacher"
    assert parent.obtained_by_role == "Designated Safeguarding Lead"
    assert parent.evidence_reference == f"referral:{referral['reference']}"
    assert list(parent.recipients) == ["local_authority", "mash"]
    own = by_child[(maya, "child")]
    assert (own.status, own.child_competent) == ("given", True)
    assert (leo, "person_with_parental_responsibility") in by_child
    async with database.transaction() as session:
        subjects = await session.scalar(
            select(func.count())
            .select_from(CaseSubject)
            .where(CaseSubject.referral_id == uuid.UUID(referral["id"]))
        )
        sequences = [r.ledger_sequence for r in records]
        kinds = (
            await session.scalars(select(ledger.c.kind).where(ledger.c.sequence.in_(sequences)))
        ).all()
        [outbox_row] = (
            await session.execute(
                select(referrals_plumbing.outbox).where(
                    referrals_plumbing.outbox.c.partition_key == referral["id"],
                    referrals_plumbing.outbox.c.event_type == "referral.received",
                )
            )
        ).all()
    assert subjects == 3
    mother = outbox_row.data["family_members"][0]["subject_id"]
    assert str(parent.grantor_subject_id) == mother
    assert set(kinds) == {"consent.recorded"}

    # The same event again (a redelivery): the inbox makes it a no-op.
    runtime = consent_api._transport.app.state.runtime  # type: ignore[attr-defined]
    duplicates = runtime.consumer_runner.duplicates
    record = to_kafka(envelope_from_attributes(outbox_row.attributes, outbox_row.data))
    producer = make_producer(bootstrap, client_id="test-redeliver")
    await producer.start()
    try:
        await producer.send_and_wait(
            outbox_row.topic, value=record.value, key=record.key, headers=record.headers
        )
    finally:
        await producer.stop()

    await eventually(lambda: runtime.consumer_runner.duplicates > duplicates)
    assert len(await consents_of(database, referral["id"])) == 4


async def test_the_dpo_audits_decisions_overrides_and_withdrawals_without_narratives(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient], database: Database
) -> None:
    referrals_api, api = apis
    posted = await referrals_api.post("/v1/referrals", json=referral_body())
    assert posted.status_code == 201
    child = uuid.UUID(posted.json()["children"][0]["subject_id"])
    refused, given = uuid.uuid4(), uuid.uuid4()

    async def consent(subject: uuid.UUID, **fields: object) -> dict:
        response = await api.post(
            "/v1/consents", json=consent_body(subject, **fields), headers=SCHOOL_ASKS
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def decide(body: dict) -> dict:
        response = await api.post("/v1/disclosures/decide", json=body, headers=SCHOOL_ASKS)
        assert response.status_code == 200, response.text
        return dict(response.json())

    await consent(refused, status="refused")
    withdrawn = await consent(given)
    without = await decide(disclosure([child]))
    override = await decide(
        disclosure(
            [refused],
            consent={"sought": True},
            override={
                "basis": "vital_interests",
                "reason": "Injuries seen today; sharing cannot wait for agreement.",
                "approved_by": APPROVER,
            },
        )
    )
    shared_with_consent = await decide(disclosure([given], consent={"sought": True}))
    assert shared_with_consent["consent_status"] == "given"
    response = await api.post(
        f"/v1/consents/{withdrawn['id']}/withdraw",
        json={"withdrawn_by": {"name": "P Parent", "role": "father"}, "reason": "changed mind"},
        headers=SCHOOL_ASKS,
    )
    assert response.status_code == 200
    changed = await decide(disclosure([given], consent={"sought": True}))

    async def dpo(path: str, **params: object) -> httpx.Response:
        response = await api.get(path, params=params, headers=DPO)
        assert response.status_code == 200, response.text
        return response

    listed = (await dpo("/v1/dpo/decisions", subject_id=str(child))).json()["items"]
    assert [item["entry_id"] for item in listed] == [without["decision_id"]]
    no_consent = (
        await dpo("/v1/dpo/decisions", without_consent="true", subject_id=str(child))
    ).json()
    assert [item["entry_id"] for item in no_consent["items"]] == [without["decision_id"]]
    with_consent = (
        await dpo("/v1/dpo/decisions", without_consent="true", subject_id=str(given))
    ).json()
    assert with_consent["items"] == []  # its share had consent; the later one was refused
    overrides = (await dpo("/v1/dpo/decisions", overridden="true", subject_id=str(refused))).json()
    [item] = overrides["items"]
    assert item["entry_id"] == override["decision_id"]
    assert item["lawful_basis"] == "vital_interests"
    assert item["payload"]["override"]["approved_by"] == APPROVER
    by_basis = (
        await dpo(
            "/v1/dpo/decisions",
            lawful_basis="vital_interests",
            agency="school",
            purpose="safeguarding_referral",
            since=(datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        )
    ).json()
    assert override["decision_id"] in {i["entry_id"] for i in by_basis["items"]}

    [withdrawal] = (await dpo("/v1/dpo/withdrawals", subject_id=str(given))).json()
    assert withdrawal["withdrawal"]["payload"]["consent_id"] == withdrawn["id"]
    assert [d["entry_id"] for d in withdrawal["later_decisions_changed"]] == [
        changed["decision_id"]
    ]

    integrity = (await dpo("/v1/dpo/integrity", full="true")).json()
    assert integrity["intact"] is True
    assert integrity["head_sequence"] >= changed["ledger_sequence"]

    async def referral_consumed() -> bool:
        # The consent service learns that the child is a referral's subject from the
        # referral.received event, asynchronously: wait for it rather than race it.
        exported = (await dpo(f"/v1/dpo/subjects/{child}/export")).json()
        return bool(exported["case_subject_of"])

    await eventually(referral_consumed, timeout=30)
    exported = (await dpo(f"/v1/dpo/subjects/{child}/export")).json()
    assert exported["ledger_entries"]
    assert exported["case_subject_of"][0]["referral_id"] == posted.json()["id"]
    html = (await dpo(f"/v1/dpo/subjects/{child}/export.html")).text
    assert html.startswith("<!doctype html>")
    assert "Disclosure decision" in html
    for document in (str(exported), html):
        assert WHAT_HAPPENED not in document and OWN_WORDS not in document

    async with database.transaction() as session:
        reads = (
            await session.scalars(
                select(AccessRecord.action).where(AccessRecord.subject_id == child)
            )
        ).all()
    assert {"list_decisions", "export_json", "export_html"} <= set(reads)

    refused_read = await api.get("/v1/dpo/decisions", headers=SCHOOL_ASKS)
    assert refused_read.status_code == 403


async def test_retention_expires_old_narratives_by_event_and_keeps_the_ledger(
    database: Database,
) -> None:
    now = datetime.now(UTC)
    old_child, young_child, recent = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    referral = uuid.uuid4()
    async with database.transaction() as session:
        await session.execute(
            insert(CaseSubject),
            [
                # Referred 8 years ago, now 30: past both rules.
                {
                    "subject_id": old_child,
                    "referral_id": referral,
                    "role": "child",
                    "received_at": now - timedelta(days=8 * 366),
                    "date_of_birth": date(now.year - 30, 1, 1),
                },
                # Referred 8 years ago but only 12 now: kept until 25.
                {
                    "subject_id": young_child,
                    "referral_id": referral,
                    "role": "child",
                    "received_at": now - timedelta(days=8 * 366),
                    "date_of_birth": date(now.year - 12, 1, 1),
                },
                # Referred last year.
                {
                    "subject_id": recent,
                    "referral_id": uuid.uuid4(),
                    "role": "family_member",
                    "received_at": now - timedelta(days=365),
                    "date_of_birth": None,
                },
            ],
        )
    policy = retention.RetentionPolicy(6, 25, 6)
    async with database.transaction() as session:
        await sweep(session, policy, now)
    async with database.transaction() as session:
        await sweep(session, policy, now)  # a second run expires nothing twice
    async with database.transaction() as session:
        events = (
            await session.execute(
                select(consent_plumbing.outbox.c.partition_key, consent_plumbing.outbox.c.data)
                .where(consent_plumbing.outbox.c.event_type == "retention.expired")
                .where(
                    consent_plumbing.outbox.c.partition_key.in_(
                        [str(old_child), str(young_child), str(recent)]
                    )
                )
            )
        ).all()
        entries = (
            await session.execute(
                select(ledger.c.kind, ledger.c.payload).where(
                    ledger.c.subject_ids.contains([old_child])
                )
            )
        ).all()
    assert [key for key, _ in events] == [str(old_child)]
    assert events[0][1]["record_type"] == "case_narrative"
    assert events[0][1]["referral_ids"] == [str(referral)]
    assert [kind for kind, _ in entries] == ["retention.expired"]


def test_the_ledger_retention_cannot_be_shortened() -> None:
    with pytest.raises(retention.RetentionPolicyError, match="always"):
        retention.parse(
            {"case_narrative": {"years_after_last_referral": 6}, "ledger": {"keep": "1y"}}
        )


async def test_the_service_writes_signed_checkpoints_on_its_timer(
    database_url: str, bootstrap: str, tmp_path: Path, database: Database
) -> None:
    async with database.transaction() as session:
        await session.execute(
            insert(consent_plumbing.timers).values(
                id=uuid.uuid4(),
                kind=CHECKPOINT_TIMER,
                aggregate_id=CHECKPOINT_TIMER,
                due_at=datetime.now(UTC) - timedelta(seconds=1),
            )
        )
    async with serving(consent_app(database_url, bootstrap, tmp_path)) as api:
        response = await api.post("/v1/disclosures/decide", json=disclosure(), headers=SCHOOL_ASKS)
        assert response.status_code == 200

        def written() -> list[checkpoints.Checkpoint]:
            return checkpoints.read_all(tmp_path / "checkpoints")

        await eventually(written, timeout=20)
    key = checkpoints.load_public_key(tmp_path / "checkpoint-key.pem")
    assert all(checkpoint.verifies_with(key) for checkpoint in written())


async def test_the_dpo_reads_the_whole_ledger_filtered_and_newest_first(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    _, api = apis
    subject = uuid.uuid4()
    recorded = await api.post("/v1/consents", json=consent_body(subject), headers=SCHOOL_ASKS)
    assert recorded.status_code == 201, recorded.text
    decisions = []
    for _ in range(3):
        decided = await api.post(
            "/v1/disclosures/decide",
            json=disclosure([subject], consent={"sought": True}),
            headers=SCHOOL_ASKS,
        )
        assert decided.status_code == 200, decided.text
        decisions.append(decided.json()["ledger_sequence"])

    async def ledger_page(**params: object) -> dict:
        response = await api.get(
            "/v1/dpo/ledger", params={"subject_id": str(subject), **params}, headers=DPO
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    everything = await ledger_page()
    assert [e["kind"] for e in everything["items"]] == ["consent.recorded"] + [
        "disclosure.decided"
    ] * 3
    only_consents = await ledger_page(kind="consent.recorded")
    assert [e["sequence"] for e in only_consents["items"]] == [recorded.json()["ledger_sequence"]]

    newest = await ledger_page(kind="disclosure.decided", newest_first="true", limit=2)
    assert [e["sequence"] for e in newest["items"]] == decisions[::-1][:2]
    assert newest["next_after_sequence"] is None
    older = await ledger_page(
        kind="disclosure.decided",
        newest_first="true",
        limit=2,
        before_sequence=newest["next_before_sequence"],
    )
    assert [e["sequence"] for e in older["items"]] == [decisions[0]]
    assert older["next_before_sequence"] is None

    # The decisions view pages the same way.
    response = await api.get(
        "/v1/dpo/decisions",
        params={"subject_id": str(subject), "newest_first": "true", "limit": 1},
        headers=DPO,
    )
    assert [e["sequence"] for e in response.json()["items"]] == [decisions[-1]]
    assert response.json()["next_before_sequence"] == decisions[-1]

    withdrawn = await api.post(
        f"/v1/consents/{recorded.json()['id']}/withdraw",
        json={"withdrawn_by": {"name": "P Parent", "role": "mother"}, "reason": "changed mind"},
        headers=SCHOOL_ASKS,
    )
    assert withdrawn.status_code == 200, withdrawn.text
    latest = await api.get(
        "/v1/dpo/withdrawals", params={"newest_first": "true", "limit": 1}, headers=DPO
    )
    [newest_withdrawal] = latest.json()
    assert newest_withdrawal["withdrawal"]["payload"]["consent_id"] == recorded.json()["id"]

    wrong_kind = await api.get("/v1/dpo/ledger", params={"kind": "referral"}, headers=DPO)
    assert wrong_kind.status_code == 422
    assert (await api.get("/v1/dpo/ledger", headers=SCHOOL_ASKS)).status_code == 403


async def test_each_verification_through_the_api_is_recorded_for_the_dpo(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    _, api = apis
    decided = await api.post("/v1/disclosures/decide", json=disclosure(), headers=SCHOOL_ASKS)
    assert decided.status_code == 200
    checked = (await api.get("/v1/dpo/integrity", params={"full": "true"}, headers=DPO)).json()
    response = await api.get("/v1/dpo/verifications", params={"limit": 5}, headers=DPO)
    assert response.status_code == 200, response.text
    latest = response.json()[0]
    assert latest["scope"] == "full" and latest["intact"] is True
    assert latest["verified_by"] == "dpo-person"
    assert latest["head_sequence"] == checked["head_sequence"] >= decided.json()["ledger_sequence"]
    assert latest["entries_checked"] == checked["entries_checked"]
    assert datetime.fromisoformat(latest["verified_at"]) == datetime.fromisoformat(
        checked["checked_at"]
    )
    assert (await api.get("/v1/dpo/verifications", headers=SCHOOL_ASKS)).status_code == 403


async def test_each_retention_run_is_recorded_with_what_it_did(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient], database: Database
) -> None:
    _, api = apis
    now = datetime.now(UTC)
    async with database.transaction() as session:
        await session.execute(
            insert(CaseSubject).values(
                subject_id=uuid.uuid4(),
                referral_id=uuid.uuid4(),
                role="family_member",
                received_at=now - timedelta(days=8 * 366),
                date_of_birth=None,
            )
        )
    policy = retention.RetentionPolicy(6, 25, 6)
    async with database.transaction() as session:
        expired = await sweep(session, policy, now)
    assert expired >= 1
    response = await api.get("/v1/dpo/retention-runs", headers=DPO)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "6 years after the last referral" in body["policy"]
    run = next(r for r in body["runs"] if datetime.fromisoformat(r["ran_at"]) == now)
    assert run["narratives_expired"] == expired
    assert run["policy"] == policy.describe()
    assert (await api.get("/v1/dpo/retention-runs", headers=SCHOOL_ASKS)).status_code == 403
