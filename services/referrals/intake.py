"""Referral intake: the write path of ``POST /v1/referrals``, built for throughput.

A referral is about twenty rows in nine tables (the referral, its children and family members
and their relationships, a data key per child, the sealed narratives, the deadlines and their
timers, and the ``referral.received`` event in the outbox). The request's own task does all the
work that needs no database: it validates, seals the narratives under fresh per-child keys,
works out the deadlines on the working-day calendar and builds every row and the event, with
the request's correlation id. It then hands the plan to the service's :class:`GroupCommit`,
which writes the plans of all concurrent requests in one transaction, table by table with
pipelined ``executemany``, and commits once (one WAL flush for the whole batch). The same
transaction holds the rows and the outbox event, exactly as with one referral per transaction.

Idempotency: a plan whose (organisation, Idempotency-Key) already exists, or repeats a key seen
earlier in its batch, is not written; the caller then answers with the referral already made
(or 409 if the body differs). Two workers racing with the same key meet at the unique constraint:
the loser's batch is rolled back and rewritten one plan at a time, where the loser is found to
be a replay.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import Table

from services.referrals.events import (
    ReferralReceived,
    ReportedChild,
    ReportedFamilyMember,
    ReportedRelationship,
)
from services.referrals.models import (
    FamilyMember,
    FamilyRelationship,
    Referral,
    ReferralChild,
    ReferralDeadline,
    ReferralText,
    plumbing,
    referral_number,
)
from services.referrals.policy import DeadlineKind, DeadlinePolicy
from services.referrals.schemas import ChildOut, DeadlineOut, ReferralCreate, ReferralOut
from services.referrals.service import DEADLINE_TIMER, SERVICE, text_context
from shared import outbox, timers
from shared.auth import Principal
from shared.calendar import WorkingDayCalendar
from shared.crypto import Vault
from shared.db import bulk_insert, bulk_insert_sql

IDEMPOTENCY_CONSTRAINT = "uq_referrals_referrer_organisation_code_idempotency_key"

REFERRAL_COLUMNS = (
    "id",
    "reference",
    "status",
    "received_at",
    "referrer_agency",
    "referrer_organisation_code",
    "referrer_organisation_name",
    "referrer_client",
    "referrer_name",
    "referrer_role",
    "referrer_email",
    "referrer_phone",
    "raised_via",
    "concern_categories",
    "immediate_risk",
    "consent_parents",
    "consent_parents_why_not_asked",
    "consent_child",
    "consent_child_competent",
    "consent_child_why_not_asked",
    "acknowledgement_due_at",
    "idempotency_key",
    "request_fingerprint",
)
_REFERENCE = REFERRAL_COLUMNS.index("reference")
SUBJECT_COLUMNS = (
    "given_names",
    "family_name",
    "other_names",
    "date_of_birth",
    "estimated_age_years",
    "unborn_expected_date",
    "sex",
    "nhs_number",
    "upn",
    "address_lines",
    "town",
    "postcode",
    "school_urn",
    "school_name",
)
CHILD_COLUMNS = ("id", "referral_id", "position", *SUBJECT_COLUMNS)
MEMBER_COLUMNS = (
    "id",
    "referral_id",
    "position",
    "given_names",
    "family_name",
    "other_names",
    "date_of_birth",
    "sex",
    "address_lines",
    "town",
    "postcode",
    "phone",
)
RELATION_COLUMNS = (
    "family_member_id",
    "child_id",
    "child_position",
    "relationship",
    "parental_responsibility",
    "lives_with_child",
)
TEXT_COLUMNS = ("referral_id", "subject_id", "kind", "sealed", "written_at")
DEADLINE_COLUMNS = ("id", "referral_id", "kind", "started_at", "due_at")


def _insert(table: Table, columns: Sequence[str]) -> str:
    known = set(table.columns.keys())
    unknown = [column for column in columns if column not in known]
    if unknown:  # caught by the tests at import time rather than by PostgreSQL under load
        raise ValueError(f"{table.name} has no column(s) {unknown}")
    names = ", ".join(f'"{column}"' for column in columns)
    values = ", ".join(f"${position}" for position in range(1, len(columns) + 1))
    return f'INSERT INTO "{table.schema}"."{table.name}" ({names}) VALUES ({values})'


INSERT_REFERRAL = _insert(Referral.__table__, REFERRAL_COLUMNS)  # type: ignore[arg-type]
INSERT_CHILD = _insert(ReferralChild.__table__, CHILD_COLUMNS)  # type: ignore[arg-type]
INSERT_MEMBER = _insert(FamilyMember.__table__, MEMBER_COLUMNS)  # type: ignore[arg-type]
# Tables without array columns take a whole batch in one statement (unnest).
INSERT_RELATIONS = bulk_insert_sql(FamilyRelationship.__table__, RELATION_COLUMNS)  # type: ignore[arg-type]
INSERT_TEXTS = bulk_insert_sql(ReferralText.__table__, TEXT_COLUMNS)  # type: ignore[arg-type]
INSERT_DEADLINES = bulk_insert_sql(ReferralDeadline.__table__, DEADLINE_COLUMNS)  # type: ignore[arg-type]
EXISTING_KEYS = (
    'SELECT referrer_organisation_code, idempotency_key FROM "referrals"."referrals" '
    "WHERE (referrer_organisation_code, idempotency_key) IN "
    "(SELECT * FROM unnest($1::text[], $2::text[]))"
)
NEXT_NUMBERS = (
    f'SELECT nextval(\'"{referral_number.schema}"."{referral_number.name}"\') '
    "FROM generate_series(1, $1)"
)


@dataclass
class IntakePlan:
    """Every row of one new referral, built without the database; the reference comes last."""

    referral_id: uuid.UUID
    organisation_code: str
    idempotency_key: str | None
    year: int
    referral: list[Any]
    children: list[list[Any]] = field(default_factory=list)
    members: list[list[Any]] = field(default_factory=list)
    relations: list[list[Any]] = field(default_factory=list)
    keys: list[list[Any]] = field(default_factory=list)
    texts: list[list[Any]] = field(default_factory=list)
    deadlines: list[list[Any]] = field(default_factory=list)
    timers: list[list[Any]] = field(default_factory=list)
    event: list[Any] = field(default_factory=list)
    response: ReferralOut = field(init=False)  # what POST answers, set by plan_referral

    def assign_reference(self, number: int) -> str:
        reference = f"TL-{self.year}-{number:06d}"
        self.referral[_REFERENCE] = reference
        self.event[5]["reference"] = reference  # the outbox row's data, still a dict
        self.response.reference = reference
        return reference


@dataclass(frozen=True)
class IntakeResult:
    created: bool  # False: an idempotent replay, nothing written
    reference: str | None = None


def plan_referral(
    request: ReferralCreate,
    *,
    referrer: Principal,
    now: datetime,
    calendar: WorkingDayCalendar,
    vault: Vault,
    policy: DeadlinePolicy,
    idempotency_key: str | None,
    request_fingerprint: str,
) -> IntakePlan:
    """Build every row of a new referral and its ``referral.received`` event (no I/O)."""
    referral_id = uuid.uuid4()
    consent = request.consent
    person = request.referrer
    ack_due = policy.due(DeadlineKind.ACKNOWLEDGEMENT, now, calendar)
    categories = [category.value for category in request.concern.categories]
    plan = IntakePlan(
        referral_id=referral_id,
        organisation_code=referrer.organisation_code,
        idempotency_key=idempotency_key,
        year=now.year,
        referral=[
            referral_id,
            None,  # reference: numbered by the batch that writes it
            "received",
            now,
            referrer.agency,
            referrer.organisation_code,
            person.organisation_name,
            referrer.subject,
            person.name,
            person.role,
            person.email,
            person.phone,
            person.raised_via.value,
            categories,
            request.concern.immediate_risk,
            consent.parents.status.value,
            consent.parents.why_not_asked,
            consent.child.status.value if consent.child else None,
            consent.child.competent if consent.child else None,
            consent.child.why_not_asked if consent.child else None,
            ack_due,
            idempotency_key,
            request_fingerprint,
        ],
    )

    shared_texts = {"what_happened": request.concern.what_happened}
    if request.concern.actions_taken:
        shared_texts["actions_taken"] = request.concern.actions_taken
    child_ids: list[uuid.UUID] = []
    reported_children: list[ReportedChild] = []
    children_out: list[ChildOut] = []
    for position, child in enumerate(request.children):
        child_id = uuid.uuid4()
        child_ids.append(child_id)
        columns = child.columns()
        plan.children.append([child_id, referral_id, position, *columns.values()])
        key_row, cipher = vault.new_subject_key(child_id)
        plan.keys.append(key_row)
        texts = dict(shared_texts)
        if child.own_words:
            texts["own_words"] = child.own_words
        for kind, plaintext in texts.items():
            sealed = vault.seal_with(
                cipher, child_id, plaintext, context=text_context(referral_id, kind)
            )
            plan.texts.append([referral_id, child_id, kind, sealed, now])
        reported_children.append(
            ReportedChild(
                subject_id=child_id,
                **{
                    name: columns[name]
                    for name in ReportedChild.model_fields
                    if name != "subject_id"
                },
            )
        )
        children_out.append(
            ChildOut(
                subject_id=child_id,
                own_words=child.own_words,
                **{
                    name: columns[name]
                    for name in ChildOut.model_fields
                    if name not in ("subject_id", "own_words")
                },
            )
        )

    reported_members: list[ReportedFamilyMember] = []
    for position, member in enumerate(request.family_members):
        member_id = uuid.uuid4()
        address = member.address
        plan.members.append(
            [
                member_id,
                referral_id,
                position,
                member.given_names,
                member.family_name,
                list(member.other_names),
                member.date_of_birth,
                member.sex.value,
                list(address.lines) if address else [],
                address.town if address else None,
                address.postcode if address else None,
                member.phone,
            ]
        )
        relationships: list[ReportedRelationship] = []
        for relation in member.relationships:
            plan.relations.append(
                [
                    member_id,
                    child_ids[relation.child],
                    relation.child,
                    relation.relationship.value,
                    relation.parental_responsibility,
                    relation.lives_with_child,
                ]
            )
            relationships.append(
                ReportedRelationship(
                    child_subject_id=child_ids[relation.child],
                    relationship=relation.relationship.value,
                    parental_responsibility=relation.parental_responsibility,
                    lives_with_child=relation.lives_with_child,
                )
            )
        reported_members.append(
            ReportedFamilyMember(
                subject_id=member_id,
                given_names=member.given_names,
                family_name=member.family_name,
                other_names=list(member.other_names),
                date_of_birth=member.date_of_birth,
                sex=member.sex.value,
                postcode=address.postcode if address else None,
                relationships=relationships,
            )
        )

    clocks = [DeadlineKind.ACKNOWLEDGEMENT, DeadlineKind.DECISION, DeadlineKind.FEEDBACK]
    if person.raised_via.value == "phone":
        clocks.append(DeadlineKind.PHONE_FOLLOW_UP)
    deadlines_out: list[DeadlineOut] = []
    timer_requests: list[timers.TimerRequest] = []
    for kind in clocks:
        deadline_id = uuid.uuid4()
        due_at = (
            ack_due if kind is DeadlineKind.ACKNOWLEDGEMENT else policy.due(kind, now, calendar)
        )
        plan.deadlines.append([deadline_id, referral_id, kind.value, now, due_at])
        timer_requests.append(
            timers.TimerRequest(
                kind=DEADLINE_TIMER,
                aggregate_id=str(deadline_id),
                due_at=due_at,
                payload={"referral_id": str(referral_id), "kind": kind.value},
            )
        )
        deadlines_out.append(
            DeadlineOut(
                kind=kind.value,
                started_at=now,
                due_at=due_at,
                status="pending",
                met_at=None,
                missed_at=None,
                cancelled_at=None,
            )
        )
    plan.timers = timers.timer_rows(timer_requests)

    event = ReferralReceived(
        referral_id=referral_id,
        reference="",  # filled in with the number the batch assigns
        received_at=now,
        referrer_agency=referrer.agency,
        referrer_organisation_code=referrer.organisation_code,
        referrer_name=person.name,
        referrer_role=person.role,
        raised_via=person.raised_via.value,
        concern_categories=categories,
        immediate_risk=request.concern.immediate_risk,
        consent_parents=consent.parents.status.value,
        consent_parents_why_not_asked=consent.parents.why_not_asked,
        consent_child=consent.child.status.value if consent.child else None,
        consent_child_competent=consent.child.competent if consent.child else None,
        consent_child_why_not_asked=consent.child.why_not_asked if consent.child else None,
        children=reported_children,
        family_members=reported_members,
        acknowledgement_due_at=ack_due,
    )
    plan.event = outbox.outbox_row(event, service=SERVICE, now=now)
    plan.response = ReferralOut(
        id=referral_id,
        reference="",
        status="received",
        received_at=now,
        acknowledgement_due_at=ack_due,
        acknowledged_at=None,
        referrer_organisation_code=referrer.organisation_code,
        referrer_agency=referrer.agency,
        concern_categories=categories,
        what_happened=request.concern.what_happened,
        actions_taken=request.concern.actions_taken,
        immediate_risk=request.concern.immediate_risk,
        consent=consent,
        children=children_out,
        family_members=list(request.family_members),
        rag=None,
        decision=None,
        decided_at=None,
        assessment_completed_at=None,
        feedback=[],
        deadlines=deadlines_out,
        history=[] if referrer.has("mash:triage") else None,
    )
    return plan


async def write_batch(
    connection: asyncpg.Connection, plans: Sequence[IntakePlan], *, vault: Vault
) -> list[IntakeResult]:
    """Write the new referrals among ``plans`` in the caller's transaction (a group commit)."""
    keyed = [plan for plan in plans if plan.idempotency_key is not None]
    taken: set[tuple[str, str]] = set()
    if keyed:
        rows = await connection.fetch(
            EXISTING_KEYS,
            [plan.organisation_code for plan in keyed],
            [plan.idempotency_key for plan in keyed],
        )
        taken = {(row[0], row[1]) for row in rows}
    fresh: list[IntakePlan] = []
    results: list[IntakeResult] = []
    for plan in plans:
        if plan.idempotency_key is not None:
            key = (plan.organisation_code, plan.idempotency_key)
            if key in taken:
                results.append(IntakeResult(created=False))
                continue
            taken.add(key)  # a second plan with this key in the same batch is a replay
        fresh.append(plan)
        results.append(IntakeResult(created=True))
    if not fresh:
        return results

    numbers = await connection.fetch(NEXT_NUMBERS, len(fresh))
    references = {
        plan.referral_id: plan.assign_reference(row[0])
        for plan, row in zip(fresh, numbers, strict=True)
    }
    # Tables with array columns (names, address lines, categories): one execution per row.
    await connection.executemany(INSERT_REFERRAL, [plan.referral for plan in fresh])
    await connection.executemany(INSERT_CHILD, [row for plan in fresh for row in plan.children])
    members = [row for plan in fresh for row in plan.members]
    if members:
        await connection.executemany(INSERT_MEMBER, members)
    for statement, rows in (
        (INSERT_RELATIONS, [row for plan in fresh for row in plan.relations]),
        (INSERT_TEXTS, [row for plan in fresh for row in plan.texts]),
        (INSERT_DEADLINES, [row for plan in fresh for row in plan.deadlines]),
    ):
        await bulk_insert(connection, statement, rows)
    await vault.insert_keys(connection, [row for plan in fresh for row in plan.keys])
    await timers.insert_rows(connection, plumbing, [row for plan in fresh for row in plan.timers])
    await outbox.insert_rows(connection, plumbing, [plan.event for plan in fresh])
    return [
        IntakeResult(created=True, reference=references[plan.referral_id])
        if result.created
        else result
        for plan, result in zip(plans, results, strict=True)
    ]
