"""The decision point as a service meets it: every answer is recorded, a request lacking a
template field is refused naming it, consent and its refusal and withdrawal are honoured, and an
override needs its basis, reason and a manager's approval."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select, text

from services.consent import decision
from services.consent.agreements import Agreement, Permission
from services.consent.models import ConsentRecord, ledger, plumbing
from shared.db import Database
from shared.disclosures import (
    Article6Basis,
    DecisionPointError,
    DisclosureClient,
    DisclosureRequest,
    Outcome,
)
from tests.services.consent_support import (
    MASH_ASKS,
    SCHOOL_ASKS,
    consent_app,
    consent_body,
    disclosure,
    head,
)
from tests.services.notifications.support import free_port
from tests.support.apps import serving
from tests.support.kafka import eventually
from tests.support.tokens import SCHOOL, bearer

APPROVER = {"name": "Sam Manager", "role": "MASH team manager"}


@pytest.fixture
async def api(
    database_url: str, bootstrap: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(consent_app(database_url, bootstrap, tmp_path)) as client:
        yield client


async def decide(api: httpx.AsyncClient, body: dict, headers: dict | None = None) -> dict:
    response = await api.post("/v1/disclosures/decide", json=body, headers=headers or SCHOOL_ASKS)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def record_consent(api: httpx.AsyncClient, subject: uuid.UUID, **fields: object) -> dict:
    response = await api.post(
        "/v1/consents", json=consent_body(subject, **fields), headers=SCHOOL_ASKS
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def entry(database: Database, sequence: int) -> dict:
    async with database.transaction() as session:
        row = (await session.execute(select(ledger).where(ledger.c.sequence == sequence))).one()
    return dict(row._mapping)


async def test_a_decision_is_answered_and_recorded_with_its_basis(
    api: httpx.AsyncClient, database: Database
) -> None:
    child = uuid.uuid4()
    answer = await decide(api, disclosure([child]))
    assert answer["decision"] == "share"
    assert answer["lawful_basis"] == "public_task"
    assert answer["consent_status"] == "not_recorded"
    assert answer["agreement_id"] == "demo-mash-isa-2026"
    recorded = await entry(database, answer["ledger_sequence"])
    assert recorded["kind"] == "disclosure.decided"
    assert recorded["entry_id"] == uuid.UUID(answer["decision_id"])
    assert recorded["subject_ids"] == [child]
    assert (recorded["from_agency"], recorded["to_agency"]) == ("school", "mash")
    assert recorded["hash"].hex() == answer["ledger_hash"]
    payload = recorded["payload"]
    assert payload["why_not_sought"] == "Asking could increase the risk to the child."
    assert payload["decided_by"] == {"name": "Jo Teacher", "role": "Designated Safeguarding Lead"}
    assert payload["necessity_and_proportionality"].startswith("The MASH needs")
    assert payload["agreement"]["transfer"].startswith("Threadline API")
    assert payload["asked_by_client"]["organisation_code"] == "100001"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"necessity_and_proportionality": None}, "necessity_and_proportionality"),
        ({"data_minimisation": None}, "data_minimisation"),
        ({"purpose": None}, "purpose"),
        ({"lawful_basis": None}, "lawful_basis"),
        ({"decided_by": None}, "decided_by"),
        ({"subject_ids": []}, "subject_ids"),
        ({"consent": {"sought": False}}, "consent.why_not_sought"),
        ({"special_category": True}, "article9_condition"),
        (
            {"special_category": True, "article9_condition": "substantial_public_interest"},
            "schedule1_condition",
        ),
        (
            {
                "special_category": True,
                "article9_condition": "substantial_public_interest",
                "schedule1_condition": "part2_para18_safeguarding_children_and_individuals_at_risk",
            },
            "paragraph18_reason",
        ),
        ({"agreement_id": "no-such-agreement"}, "agreement_id"),
        (
            {"override": {"basis": "public_task", "reason": "The risk of harm is significant."}},
            "override.approved_by",
        ),
        (
            {
                "override": {
                    "basis": "public_task",
                    "reason": "The risk of harm is significant.",
                    "approved_by": {"name": "Jo Teacher", "role": "DSL"},
                }
            },
            "override.approved_by",
        ),
        (
            {"override": {"basis": "consent", "reason": "x" * 20, "approved_by": APPROVER}},
            "override.basis",
        ),
    ],
)
async def test_a_request_missing_a_template_field_is_refused_naming_it_and_nothing_is_written(
    api: httpx.AsyncClient, database_url: str, change: dict, field: str
) -> None:
    body = disclosure()
    for key, value in change.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    before = await head(database_url)
    response = await api.post("/v1/disclosures/decide", json=body, headers=SCHOOL_ASKS)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert field in [error["field"] for error in problem["errors"]], problem
    assert await head(database_url) == before


async def test_special_category_data_under_paragraph_18_is_recorded_with_its_reason(
    api: httpx.AsyncClient, database: Database
) -> None:
    answer = await decide(
        api,
        disclosure(
            data_categories=["health"],
            special_category=True,
            article9_condition="substantial_public_interest",
            schedule1_condition="part2_para18_safeguarding_children_and_individuals_at_risk",
            paragraph18_reason="obtaining_consent_would_prejudice_protection",
        ),
    )
    assert answer["decision"] == "share"
    assert answer["schedule1_condition"].startswith("part2_para18")
    payload = (await entry(database, answer["ledger_sequence"]))["payload"]
    assert payload["paragraph18_reason"] == "obtaining_consent_would_prejudice_protection"
    assert payload["special_category"] is True


async def test_consent_given_is_shared_and_a_refusal_is_not_unless_overridden_with_approval(
    api: httpx.AsyncClient,
) -> None:
    given, refused = uuid.uuid4(), uuid.uuid4()
    await record_consent(api, given)
    refusal = await record_consent(api, refused, status="refused")

    answer = await decide(api, disclosure([given], consent={"sought": True}))
    assert (answer["decision"], answer["consent_status"]) == ("share", "given")

    answer = await decide(api, disclosure([refused], consent={"sought": True}))
    assert (answer["decision"], answer["consent_status"]) == ("do_not_share", "refused")
    assert refusal["id"] in answer["reasons"][0]
    assert answer["lawful_basis"] is None

    # Both subjects in one request: the refusal governs.
    answer = await decide(api, disclosure([given, refused], consent={"sought": True}))
    assert answer["decision"] == "do_not_share"

    override = {
        "basis": "public_task",
        "reason": "Maya disclosed harm today; the risk of significant harm outweighs the refusal.",
        "approved_by": APPROVER,
    }
    answer = await decide(api, disclosure([refused], consent={"sought": True}, override=override))
    assert answer["decision"] == "share"
    assert answer["consent_overridden"] is True
    assert answer["lawful_basis"] == "public_task"


async def test_the_entry_lists_each_subject_with_a_record_of_consent_and_counts_the_rest(
    api: httpx.AsyncClient, database: Database
) -> None:
    """A household's chronology read names hundreds of subjects, most with no record of
    consent: all are in subject_ids, but only those with a record are listed one by one."""
    given = uuid.uuid4()
    others = [uuid.uuid4() for _ in range(5)]
    consent = await record_consent(api, given)
    answer = await decide(api, disclosure([given, *others], consent={"sought": True}))
    recorded = await entry(database, answer["ledger_sequence"])
    assert sorted(recorded["subject_ids"]) == sorted([given, *others])
    payload = recorded["payload"]
    assert payload["consent_by_subject"] == [
        {
            "subject_id": str(given),
            "status": "given",
            "consent_ids": [consent["id"]],
            "competent_child": False,
        }
    ]
    assert payload["subjects_without_consent_records"] == 5


async def test_a_withdrawal_is_announced_and_every_later_decision_honours_it(
    api: httpx.AsyncClient, database: Database
) -> None:
    child = uuid.uuid4()
    consent = await record_consent(api, child)
    before = await decide(api, disclosure([child], consent={"sought": True}))
    assert before["decision"] == "share"

    response = await api.post(
        f"/v1/consents/{consent['id']}/withdraw",
        json={
            "withdrawn_by": {"name": "Sarah Exampleton", "role": "mother"},
            "reason": "Told the DSL she no longer agrees to the school sharing.",
        },
        headers=SCHOOL_ASKS,
    )
    assert response.status_code == 200, response.text
    withdrawn = response.json()
    assert withdrawn["status"] == "withdrawn"
    again = await api.post(
        f"/v1/consents/{consent['id']}/withdraw",
        json={"withdrawn_by": {"name": "X Y", "role": "mother"}, "reason": "again, twice"},
        headers=SCHOOL_ASKS,
    )
    assert again.status_code == 409

    after = await decide(api, disclosure([child], consent={"sought": True}))
    assert after["decision"] == "do_not_share"
    assert after["consent_status"] == "withdrawn"
    assert after["withdrawals_applied"] == [consent["id"]]

    async with database.transaction() as session:
        events = (
            await session.execute(
                select(plumbing.outbox.c.event_type, plumbing.outbox.c.data)
                .where(plumbing.outbox.c.partition_key == str(child))
                .order_by(plumbing.outbox.c.seq)
            )
        ).all()
    kinds = [kind for kind, _ in events]
    assert kinds == ["consent.recorded", "consent.withdrawn"]
    assert events[1][1]["ledger_sequence"] == withdrawn["withdrawal_sequence"]


async def test_a_disclosure_outside_the_agreement_is_recorded_as_do_not_share(
    api: httpx.AsyncClient, database: Database
) -> None:
    body = disclosure(recipient={"agency": "police"}, purpose="operation_encompass")
    answer = await decide(api, body)
    assert answer["decision"] == "do_not_share"
    assert "does not let school share" in answer["reasons"][0]
    recorded = await entry(database, answer["ledger_sequence"])
    assert recorded["outcome"] == "do_not_share"


async def test_consent_as_the_basis_without_a_recorded_consent_is_not_shared(
    api: httpx.AsyncClient,
) -> None:
    answer = await decide(api, disclosure(lawful_basis="consent", consent={"sought": True}))
    assert answer["decision"] == "do_not_share"


async def test_an_agency_asks_only_for_itself(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/disclosures/decide", json=disclosure(), headers=MASH_ASKS)
    assert response.status_code == 403
    assert "requester.agency" in response.json()["detail"]
    no_scope = await api.post("/v1/disclosures/decide", json=disclosure(), headers=SCHOOL)
    assert no_scope.status_code in (401, 403)
    delegate = bearer(
        organisation="THREADLINE-TIMELINE",
        agency="mash",
        scopes="disclosures:decide disclosures:delegate",
        audience="threadline:consent",
    )
    answer = await decide(api, disclosure(), headers=delegate)
    assert answer["decision"] == "share"


async def test_concurrent_decisions_are_group_committed_into_one_unbroken_chain(
    api: httpx.AsyncClient, database: Database, database_url: str
) -> None:
    from fastapi import FastAPI

    app: FastAPI = api._transport.app  # type: ignore[attr-defined]
    writer = app.state.ledger_writer
    batches_before, commands_before = writer.batches, writer.commands
    answers = await asyncio.gather(*(decide(api, disclosure()) for _ in range(200)))
    sequences = sorted(answer["ledger_sequence"] for answer in answers)
    assert len(set(sequences)) == 200
    assert writer.commands - commands_before == 200
    assert writer.batches - batches_before < 200  # several decisions shared a commit
    async with database.transaction() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(ledger)
            .where(ledger.c.sequence.between(sequences[0], sequences[-1]))
        )
    assert count == sequences[-1] - sequences[0] + 1  # dense: nothing else broke the run


async def test_the_shared_client_asks_the_decision_point(api: httpx.AsyncClient) -> None:
    token = SCHOOL_ASKS["Authorization"].removeprefix("Bearer ")

    async def current_token() -> str:
        return token

    client = DisclosureClient("http://testserver", current_token, http=api)
    request = DisclosureRequest.model_validate(disclosure())
    answer = await client.decide(request)
    assert answer.decision is Outcome.SHARE
    assert answer.lawful_basis is Article6Basis.PUBLIC_TASK
    assert answer.ledger_sequence > 0

    bad = DisclosureRequest.model_validate(
        disclosure(consent={"sought": False, "why_not_sought": None})
    )
    assert bad.problems() == [
        ("consent.why_not_sought", "is required when consent was not sought: say why")
    ]
    with pytest.raises(DecisionPointError) as refused:
        await client.decide(bad)
    assert refused.value.status == 422
    assert refused.value.problem["errors"][0]["field"] == "consent.why_not_sought"


async def test_the_shared_client_asks_over_the_network(api: httpx.AsyncClient) -> None:
    """The deployed path: aiohttp to the consent service on a real socket (uvicorn), its
    answers and refusals read as in process; a port with nothing on it is a 503."""
    app = api._transport.app  # type: ignore[attr-defined]  # the running consent app
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, timeout=10, every=0.05)
    token = SCHOOL_ASKS["Authorization"].removeprefix("Bearer ")

    async def current_token() -> str:
        return token

    client = DisclosureClient(f"http://127.0.0.1:{config.port}", current_token)
    try:
        answers = await asyncio.gather(
            *(client.decide(DisclosureRequest.model_validate(disclosure())) for _ in range(20))
        )
        assert {answer.decision for answer in answers} == {Outcome.SHARE}
        assert len({answer.ledger_sequence for answer in answers}) == 20
        bad = DisclosureRequest.model_validate(
            disclosure(consent={"sought": False, "why_not_sought": None})
        )
        with pytest.raises(DecisionPointError) as refused:
            await client.decide(bad)
        assert refused.value.status == 422
        assert refused.value.problem["errors"][0]["field"] == "consent.why_not_sought"
    finally:
        await client.aclose()
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)
    nobody = DisclosureClient(f"http://127.0.0.1:{free_port()}", current_token, timeout=2)
    try:
        with pytest.raises(DecisionPointError) as unreachable:
            await nobody.decide(DisclosureRequest.model_validate(disclosure()))
        assert unreachable.value.status == 503
        assert "unreachable" in unreachable.value.problem["detail"]
    finally:
        await nobody.aclose()


async def test_consent_records_are_validated(api: httpx.AsyncClient, database: Database) -> None:
    child = uuid.uuid4()
    response = await api.post(
        "/v1/consents",
        json=consent_body(child, grantor_kind="child", status="not_sought"),
        headers=SCHOOL_ASKS,
    )
    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"child_competent", "why_not_sought"}
    async with database.transaction() as session:
        assert not (
            await session.scalars(select(ConsentRecord).where(ConsentRecord.subject_id == child))
        ).all()


# The decision itself, without I/O


def _agreement() -> Agreement:
    from datetime import date

    return Agreement(
        id="a",
        name="A",
        partnership="P",
        default_basis=Article6Basis.PUBLIC_TASK,
        valid_from=date(2026, 1, 1),
        valid_until=date(2027, 1, 1),
        transfer="t",
        retention="r",
        permissions=(
            Permission(
                senders=frozenset({"school"}),
                recipients=frozenset({"mash"}),
                purposes=frozenset({"safeguarding_referral"}),
                data_categories=frozenset({"*"}),
            ),
        ),
    )


def _consent(subject: uuid.UUID, grantor: str, status: str, **kw: object) -> decision.ConsentView:
    fields: dict = {
        "id": uuid.uuid4(),
        "subject_id": subject,
        "grantor_kind": grantor,
        "child_competent": None,
        "status": status,
        "data_categories": ("*",),
        "recipients": ("mash",),
        "purposes": ("safeguarding_referral",),
        "obtained_at": datetime(2026, 2, 1, tzinfo=UTC),
        "expires_at": None,
        "withdrawn_at": None,
    }
    fields.update(kw)
    return decision.ConsentView(**fields)


NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_a_competent_childs_own_consent_governs_over_a_parents_refusal() -> None:
    child = uuid.uuid4()
    request = DisclosureRequest.model_validate(disclosure([child], consent={"sought": True}))
    records = [
        _consent(child, "person_with_parental_responsibility", "refused"),
        _consent(child, "child", "given", child_competent=True),
    ]
    verdict = decision.decide(request, _agreement(), {child: records}, NOW)
    assert verdict.outcome is Outcome.SHARE
    assert verdict.subjects[0].governed_by_competent_child


def test_consent_that_expired_or_covers_another_purpose_does_not_count() -> None:
    child = uuid.uuid4()
    request = DisclosureRequest.model_validate(disclosure([child], consent={"sought": True}))
    expired = _consent(child, "parents", "refused", expires_at=datetime(2026, 3, 1, tzinfo=UTC))
    elsewhere = _consent(child, "parents", "refused", purposes=("referral_feedback",))
    verdict = decision.decide(request, _agreement(), {child: [expired, elsewhere]}, NOW)
    assert verdict.consent_status == decision.NOT_RECORDED
    assert verdict.outcome is Outcome.SHARE


def test_an_agreement_out_of_force_refuses() -> None:
    request = DisclosureRequest.model_validate(disclosure())
    verdict = decision.decide(request, _agreement(), {}, datetime(2027, 6, 1, tzinfo=UTC))
    assert verdict.outcome is Outcome.DO_NOT_SHARE
    assert "in force" in verdict.reasons[0]


async def test_two_writers_as_two_replicas_keep_one_unbroken_chain(
    database_url: str, tmp_path: Path
) -> None:
    """Each replica runs its own group-commit writer; the chain lock interleaves their batches."""
    from deploy.local.stack import REPO_ROOT
    from services.consent import agreements as agreements_module
    from services.consent.models import WRITER_ROLE
    from services.consent.service import Decide
    from services.consent.writer import LedgerWriter
    from shared.auth import Principal
    from tests.services.test_consent_ledger import verify

    sharing = agreements_module.load(REPO_ROOT / "config" / "consent" / "agreements.toml")
    agreement = sharing.get("demo-mash-isa-2026")
    assert agreement is not None
    principal = Principal("client-100001", "test", "100001", "school", frozenset(), None)
    databases = [Database(database_url, role=WRITER_ROLE, pre_ping=False) for _ in range(2)]
    writers = [LedgerWriter(db, lambda: datetime.now(UTC), max_batch=20) for db in databases]
    try:
        results = await asyncio.gather(
            *(
                writers[n % 2].submit(
                    Decide(DisclosureRequest.model_validate(disclosure()), agreement, principal)
                )
                for n in range(300)
            )
        )
    finally:
        for writer in writers:
            await writer.stop()
        for db in databases:
            await db.dispose()
    sequences = sorted(result.ledger_sequence for result in results)
    assert len(set(sequences)) == 300
    assert all(writer.batches > 1 for writer in writers)
    checkpoints_key = tmp_path / "checkpoint-key.pem"
    from services.consent import checkpoints

    checkpoints.load_or_create_signing_key(checkpoints_key, create=True)
    result = await verify(database_url, tmp_path)
    assert result.intact, result.first_broken
    assert result.chain.last_sequence >= sequences[-1]


async def test_a_withdrawal_committed_while_a_decision_waits_for_the_chain_lock_is_honoured(
    api: httpx.AsyncClient, database: Database, database_url: str
) -> None:
    """The lock, the head and the consent records come in one round trip; the records must be
    read after the lock is granted, or a decision could be chained after a withdrawal it did
    not see."""
    from deploy.local.stack import REPO_ROOT
    from services.consent import agreements as agreements_module
    from services.consent.models import WRITER_ROLE
    from services.consent.service import Decide
    from services.consent.writer import LedgerWriter
    from shared.auth import Principal

    child = uuid.uuid4()
    consent = await record_consent(api, child)
    sharing = agreements_module.load(REPO_ROOT / "config" / "consent" / "agreements.toml")
    agreement = sharing.get("demo-mash-isa-2026")
    assert agreement is not None
    principal = Principal("client-100001", "test", "100001", "school", frozenset(), None)
    writer_database = Database(database_url, role=WRITER_ROLE, pre_ping=False)
    writer = LedgerWriter(writer_database, lambda: datetime.now(UTC))
    request = DisclosureRequest.model_validate(disclosure([child], consent={"sought": True}))
    try:
        async with database.transaction() as other:  # another replica's writer, holding the lock
            await other.execute(text("SELECT * FROM consent.ledger_lock_head_consents('{}')"))
            waiting = asyncio.create_task(writer.submit(Decide(request, agreement, principal)))
            await asyncio.sleep(0.5)
            assert not waiting.done()  # it waits for the lock
            await other.execute(
                text(
                    "UPDATE consent.consent_records SET status = 'withdrawn', "
                    "withdrawn_at = now() WHERE id = :id"
                ),
                {"id": uuid.UUID(consent["id"])},
            )
        answer = await asyncio.wait_for(waiting, timeout=10)
    finally:
        await writer.stop()
        await writer_database.dispose()
    assert answer.decision == Outcome.DO_NOT_SHARE
    assert answer.consent_status == "withdrawn"


async def test_while_the_writer_holds_the_chain_lock_new_requests_wait_for_its_commit(
    database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    """The lock holder goes first: requests are taken up between the writer's batches, not
    inside the window in which no other replica can append."""
    from services.consent.writer import Batch

    app = consent_app(database_url, bootstrap, tmp_path)
    inside, release = asyncio.Event(), asyncio.Event()

    class Slow:
        def subjects(self) -> list[uuid.UUID]:
            return []

        async def execute(self, batch: Batch) -> str:
            inside.set()
            await release.wait()
            return "done"

    async with serving(app) as client:
        writer = app.state.ledger_writer
        await writer.turn()  # nothing held: at once
        held = asyncio.create_task(writer.submit(Slow()))
        await asyncio.wait_for(inside.wait(), timeout=10)
        request = asyncio.create_task(client.get(f"/v1/consents/{uuid.uuid4()}"))
        health = await asyncio.wait_for(client.get("/healthz"), timeout=5)
        assert health.status_code == 200  # health is answered at once
        await asyncio.sleep(0.3)
        assert not request.done()  # an API request waits while the lock is held …
        release.set()
        assert await asyncio.wait_for(held, timeout=10) == "done"
        response = await asyncio.wait_for(request, timeout=10)  # … and goes on after the commit
        assert response.status_code == 401  # (no token: it went on to be refused)
        failing = asyncio.create_task(writer.submit(Failing()))
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(failing, timeout=10)
        await asyncio.wait_for(writer.turn(), timeout=1)  # a failed batch lets go as well


class Failing:
    def subjects(self) -> list[uuid.UUID]:
        return []

    async def execute(self, batch: object) -> None:
        raise RuntimeError("broken")


async def test_a_partnership_may_require_a_managers_approval_for_special_category_data(
    database_url: str, bootstrap: str, tmp_path: Path, database: Database
) -> None:
    from deploy.local.stack import REPO_ROOT

    config = (REPO_ROOT / "config" / "consent" / "agreements.toml").read_text()
    strict = tmp_path / "agreements.toml"
    strict.write_text(
        config.replace(
            "special_category_requires_manager_approval = false",
            "special_category_requires_manager_approval = true",
        )
    )
    health = disclosure(
        data_categories=["health"],
        special_category=True,
        article9_condition="health_social_care",
        schedule1_condition="part1_para2_health_social_care",
    )
    app = consent_app(database_url, bootstrap, tmp_path, agreements_file=str(strict))
    async with serving(app) as api:
        refused = await api.post("/v1/disclosures/decide", json=health, headers=SCHOOL_ASKS)
        assert refused.status_code == 422
        assert [e["field"] for e in refused.json()["errors"]] == ["approved_by"]
        answer = await decide(api, {**health, "approved_by": APPROVER})
        assert answer["decision"] == "share"
    assert (await entry(database, answer["ledger_sequence"]))["payload"]["approved_by"] == APPROVER
