"""Referral intake: the write path of ``POST /v1/referrals``, built for throughput.

A referral is about twenty rows in nine tables (the referral, its children and family members
and their relationships, a data key per child, the sealed narratives, the deadlines and their
timers, and the ``referral.received`` event in the outbox). The request's own task does all the
work that needs no database: it validates, seals the narratives under fresh per-child keys,
works out the deadlines on the working-day calendar and builds every row and the event, with
the request's correlation id. It then hands the plan to the service's :class:`GroupCommit`,
which writes the plans of all concurrent requests with **one SQL statement**: each table's rows
arrive as arrays and are inserted by ``unnest`` in data-modifying CTEs, the referral numbers are
drawn from the sequence inside it, and ``pg_notify`` wakes the relay. One statement is one
transaction and one WAL flush for the whole batch, and one round trip: the writer never waits
on the event loop between statements while requests are being parsed (with a dozen statements
per batch it did, and batches took ~130 ms). The rows and the outbox event commit together.

Idempotency: ``ON CONFLICT (organisation, Idempotency-Key) DO NOTHING`` on the referral, and
every other row of a plan is inserted only if its referral was, so a plan whose key exists (or
is being written by another worker's transaction, which the insert waits for) writes nothing and
the caller answers with the referral already made, or 409 if the body differs. A key repeated
within one batch is settled before the statement: the first plan is written, the rest replay.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import ARRAY, String, Table
from sqlalchemy.dialects import postgresql

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
    data_keys,
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
from shared.ids import uuid7

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
    "nhs_number",
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


KEY_COLUMNS = ("subject_id", "master_key_id", "wrapped_key")
_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]


def _cast(table: Table, name: str) -> str:
    """The array type a column's values are sent as: jsonb for array columns (``unnest`` would
    flatten an array of arrays), text for strings (a cast to varchar(n) would truncate, where
    the column itself refuses an over-long value)."""
    column_type = table.columns[name].type
    if isinstance(column_type, ARRAY):
        return "jsonb"
    if isinstance(column_type, String):
        return "text"
    return str(column_type.compile(dialect=_POSTGRESQL))


def _value(alias: str, table: Table, name: str) -> str:
    if isinstance(table.columns[name].type, ARRAY):
        return f'ARRAY(SELECT jsonb_array_elements_text({alias}."{name}"))'
    return f'{alias}."{name}"'


def _qualified(table: Table) -> str:
    return f'"{table.schema}"."{table.name}"'


class _Statement:
    """Builds the one statement that writes a batch; parameters are numbered as added."""

    def __init__(self) -> None:
        self.parameters = 0

    def unnest(self, table: Table, names: Sequence[str], extra: Sequence[tuple[str, str]]) -> str:
        unknown = [name for name in names if name not in table.columns]
        if unknown:  # found when the module is imported, not by PostgreSQL under load
            raise ValueError(f"{table.name} has no column(s) {unknown}")
        casts = [_cast(table, name) for name in names] + [cast for _, cast in extra]
        arrays = []
        for cast in casts:
            self.parameters += 1
            arrays.append(f"${self.parameters}::{cast}[]")
        columns = ", ".join(f'"{name}"' for name in [*names, *(name for name, _ in extra)])
        return f"unnest({', '.join(arrays)}) AS u({columns})"


def _intake_sql() -> tuple[str, int]:
    statement = _Statement()
    referrals: Table = Referral.__table__  # type: ignore[assignment]
    given = [name for name in REFERRAL_COLUMNS if name != "reference"]
    sequence = f'"{referral_number.schema}"."{referral_number.name}"'
    number = "i.number::text"
    ctes = [
        "input AS (SELECT u.*, nextval('"
        + sequence
        + "') AS number FROM "
        + statement.unnest(referrals, given, [("year", "int")])
        + ")",
        f"referral AS (INSERT INTO {_qualified(referrals)} "
        f"({', '.join(f'{chr(34)}{name}{chr(34)}' for name in ['reference', *given])}) "
        f"SELECT 'TL-' || i.year || '-' || lpad({number}, greatest(6, length({number})), '0'), "
        + ", ".join(_value("i", referrals, name) for name in given)
        + " FROM input i ON CONFLICT (referrer_organisation_code, idempotency_key) DO NOTHING"
        ' RETURNING "id", "reference")',
    ]
    parts: list[tuple[str, Table, Sequence[str]]] = [
        ("child", ReferralChild.__table__, CHILD_COLUMNS),  # type: ignore[list-item]
        ("member", FamilyMember.__table__, MEMBER_COLUMNS),  # type: ignore[list-item]
        ("relation", FamilyRelationship.__table__, RELATION_COLUMNS),  # type: ignore[list-item]
        ("data_key", data_keys, KEY_COLUMNS),
        ("text", ReferralText.__table__, TEXT_COLUMNS),  # type: ignore[list-item]
        ("deadline", ReferralDeadline.__table__, DEADLINE_COLUMNS),  # type: ignore[list-item]
        ("timer", plumbing.timers, timers.TIMER_COLUMNS),
    ]
    written = ' WHERE u."referral" IN (SELECT "id" FROM referral)'
    for name, table, columns in parts:
        ctes.append(
            f"{name} AS (INSERT INTO {_qualified(table)} "
            f"({', '.join(f'{chr(34)}{column}{chr(34)}' for column in columns)}) "
            f"SELECT {', '.join(_value('u', table, column) for column in columns)} "
            f"FROM {statement.unnest(table, columns, [('referral', 'uuid')])}{written})"
        )
    event_columns = outbox.OUTBOX_COLUMNS
    ctes.append(
        f"event AS (INSERT INTO {_qualified(plumbing.outbox)} "
        f"({', '.join(f'{chr(34)}{column}{chr(34)}' for column in event_columns)}) "
        f"SELECT {', '.join(_value('u', plumbing.outbox, c) for c in event_columns[:-1])}, "
        "jsonb_set(u.data, '{reference}', to_jsonb(r.reference)) "
        f"FROM {statement.unnest(plumbing.outbox, event_columns, [('referral', 'uuid')])} "
        'JOIN referral r ON r."id" = u."referral")'
    )
    sql = (
        "WITH " + ",\n".join(ctes) + '\nSELECT r."id", r."reference", '
        f"pg_notify('{plumbing.notify_channel}', '') FROM referral r"
    )
    return sql, statement.parameters


INTAKE_SQL, INTAKE_PARAMETERS = _intake_sql()
# Values per row of each part (with the trailing referral id), in the order of IntakePlan.parts.
PART_WIDTHS = tuple(
    len(columns) + 1
    for columns in (
        CHILD_COLUMNS,
        MEMBER_COLUMNS,
        RELATION_COLUMNS,
        KEY_COLUMNS,
        TEXT_COLUMNS,
        DEADLINE_COLUMNS,
        timers.TIMER_COLUMNS,
        outbox.OUTBOX_COLUMNS,
    )
)


@dataclass
class IntakePlan:
    """Every row of one new referral, built without the database, as the batch statement takes
    them: array values as JSON, and each row (but the referral's) ending with the referral id.
    The reference number is drawn when the batch is written."""

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
    events: list[list[Any]] = field(default_factory=list)
    response: ReferralOut = field(init=False)  # what POST answers, set by plan_referral

    def parts(self) -> tuple[list[list[Any]], ...]:
        """The rows of each table, in the order of the batch statement's CTEs."""
        return (
            self.children,
            self.members,
            self.relations,
            self.keys,
            self.texts,
            self.deadlines,
            self.timers,
            self.events,
        )


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
    referral_id = uuid7()
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
            json.dumps(categories),
            request.concern.immediate_risk,
            consent.parents.status.value,
            consent.parents.why_not_asked,
            consent.child.status.value if consent.child else None,
            consent.child.competent if consent.child else None,
            consent.child.why_not_asked if consent.child else None,
            ack_due,
            idempotency_key,
            request_fingerprint,
            now.year,
        ],
    )

    shared_texts = {"what_happened": request.concern.what_happened}
    if request.concern.actions_taken:
        shared_texts["actions_taken"] = request.concern.actions_taken
    child_ids: list[uuid.UUID] = []
    reported_children: list[ReportedChild] = []
    children_out: list[ChildOut] = []
    for position, child in enumerate(request.children):
        child_id = uuid7()
        child_ids.append(child_id)
        columns = child.columns()
        plan.children.append(
            [child_id, referral_id, position, *_json_lists(columns.values()), referral_id]
        )
        key_row, cipher = vault.new_subject_key(child_id)
        plan.keys.append([*key_row, referral_id])
        texts = dict(shared_texts)
        if child.own_words:
            texts["own_words"] = child.own_words
        for kind, plaintext in texts.items():
            sealed = vault.seal_with(
                cipher, child_id, plaintext, context=text_context(referral_id, kind)
            )
            plan.texts.append([referral_id, child_id, kind, sealed, now, referral_id])
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
        member_id = uuid7()
        address = member.address
        plan.members.append(
            [
                member_id,
                referral_id,
                position,
                member.given_names,
                member.family_name,
                json.dumps(list(member.other_names)),
                member.date_of_birth,
                member.sex.value,
                member.nhs_number,
                json.dumps(list(address.lines) if address else []),
                address.town if address else None,
                address.postcode if address else None,
                member.phone,
                referral_id,
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
                    referral_id,
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
                nhs_number=member.nhs_number,
                address_lines=list(address.lines) if address else [],
                town=address.town if address else None,
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
        deadline_id = uuid7()
        due_at = (
            ack_due if kind is DeadlineKind.ACKNOWLEDGEMENT else policy.due(kind, now, calendar)
        )
        plan.deadlines.append([deadline_id, referral_id, kind.value, now, due_at, referral_id])
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
    plan.timers = [[*row, referral_id] for row in timers.timer_rows(timer_requests)]

    event = ReferralReceived(
        referral_id=referral_id,
        reference="",  # filled in with the number the batch assigns
        received_at=now,
        referrer_agency=referrer.agency,
        referrer_organisation_code=referrer.organisation_code,
        referrer_name=person.name,
        referrer_role=person.role,
        referrer_organisation_name=person.organisation_name,
        referrer_email=person.email,
        referrer_phone=person.phone,
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
    plan.events = [[*outbox.outbox_row(event, service=SERVICE, now=now), referral_id]]
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


def _json_lists(values: Iterable[Any]) -> list[Any]:
    return [json.dumps(value) if isinstance(value, list) else value for value in values]


def _columns(rows: list[list[Any]], width: int) -> list[list[Any]]:
    """Rows as one list per column (the arrays ``unnest`` takes); no rows, empty lists."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


async def write_batch(
    connection: asyncpg.Connection, plans: Sequence[IntakePlan]
) -> list[IntakeResult]:
    """Write the new referrals among ``plans`` with one statement (see the module docstring)."""
    seen: set[tuple[str, str]] = set()
    fresh: list[IntakePlan] = []
    repeated: set[int] = set()
    for position, plan in enumerate(plans):
        if plan.idempotency_key is not None:
            key = (plan.organisation_code, plan.idempotency_key)
            if key in seen:  # the first plan with this key in the batch is written; the rest replay
                repeated.add(position)
                continue
            seen.add(key)
        fresh.append(plan)
    arguments = _columns([plan.referral for plan in fresh], len(fresh[0].referral))
    for index, width in enumerate(PART_WIDTHS):
        arguments += _columns([row for plan in fresh for row in plan.parts()[index]], width)
    written = {row[0]: row[1] for row in await connection.fetch(INTAKE_SQL, *arguments)}
    results: list[IntakeResult] = []
    for position, plan in enumerate(plans):
        reference = None if position in repeated else written.get(plan.referral_id)
        if reference is None:
            results.append(IntakeResult(created=False))
            continue
        plan.response.reference = reference
        results.append(IntakeResult(created=True, reference=reference))
    return results
