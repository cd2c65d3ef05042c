"""Referral use cases. No HTTP here and no commit: the caller's scope owns the transaction."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from services.referrals.events import (
    DeadlineMissed,
    ReferralAcknowledged,
    ReferralAckOverdue,
    ReferralAssessmentCompleted,
    ReferralAssessmentOverdue,
    ReferralDecided,
    ReferralDecisionOverdue,
    ReferralFeedbackOverdue,
    ReferralFeedbackSent,
    ReferralPhoneFollowUpDue,
    ReferralRated,
    ReferralReceived,
    ReferralReopened,
    ReportedChild,
    ReportedFamilyMember,
    ReportedRelationship,
)
from services.referrals.models import (
    AccessRecord,
    FamilyMember,
    FamilyRelationship,
    Referral,
    ReferralAction,
    ReferralChild,
    ReferralDeadline,
    ReferralText,
    plumbing,
)
from services.referrals.policy import DeadlineKind, DeadlinePolicy
from services.referrals.repository import ReferralRepository
from services.referrals.schemas import Decision, ReferralCreate
from shared import outbox, timers
from shared.auth import Principal
from shared.calendar import WorkingDayCalendar
from shared.crypto import KeyDestroyed, Vault
from shared.db import Database
from shared.errors import Conflict, NotFound
from shared.timers import DueTimer

SERVICE = "referrals"
DEADLINE_TIMER = "referral.deadline"
MASH_SCOPE = "mash:triage"
ASSESSMENT_DECISIONS = frozenset({Decision.SECTION_17, Decision.SECTION_47_STRATEGY})


class IdempotencyMismatch(Conflict):
    title = "Idempotency key reused"


def fingerprint(request: BaseModel) -> str:
    """What makes two requests "the same body" for an idempotent retry."""
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def text_context(referral_id: uuid.UUID, kind: str) -> str:
    """What a sealed text is bound to: it opens only as this kind of text of this referral."""
    return f"referrals.referral_texts:{referral_id}:{kind}"


async def receive_referral(
    session: AsyncSession,
    request: ReferralCreate,
    *,
    referrer: Principal,
    now: datetime,
    calendar: WorkingDayCalendar,
    vault: Vault,
    policy: DeadlinePolicy,
    idempotency_key: str | None,
) -> tuple[Referral, bool]:
    """Store a referral, seal its narratives, announce it and start its clocks.

    Returns the referral and whether it was created now (False: an idempotent replay).
    """
    repository = ReferralRepository(session)
    request_fingerprint = fingerprint(request)
    if idempotency_key is not None:
        existing = await repository.by_idempotency_key(referrer.organisation_code, idempotency_key)
        if existing is not None:
            return _replay(existing, request_fingerprint), False

    referral_id = uuid.uuid4()
    number = await repository.next_number()
    due_at = policy.due(DeadlineKind.ACKNOWLEDGEMENT, now, calendar)
    consent = request.consent
    referral = Referral(
        id=referral_id,
        reference=f"TL-{now.year}-{number:06d}",
        status="received",
        received_at=now,
        referrer_agency=referrer.agency,
        referrer_organisation_code=referrer.organisation_code,
        referrer_organisation_name=request.referrer.organisation_name,
        referrer_client=referrer.subject,
        referrer_name=request.referrer.name,
        referrer_role=request.referrer.role,
        referrer_email=request.referrer.email,
        referrer_phone=request.referrer.phone,
        raised_via=request.referrer.raised_via.value,
        concern_categories=[category.value for category in request.concern.categories],
        immediate_risk=request.concern.immediate_risk,
        consent_parents=consent.parents.status.value,
        consent_parents_why_not_asked=consent.parents.why_not_asked,
        consent_child=consent.child.status.value if consent.child else None,
        consent_child_competent=consent.child.competent if consent.child else None,
        consent_child_why_not_asked=consent.child.why_not_asked if consent.child else None,
        acknowledgement_due_at=due_at,
        idempotency_key=idempotency_key,
        request_fingerprint=request_fingerprint,
    )
    children = [
        ReferralChild(
            id=uuid.uuid4(),
            referral_id=referral_id,
            position=position,
            **child.columns(),
        )
        for position, child in enumerate(request.children)
    ]
    members: list[FamilyMember] = []
    relations: list[FamilyRelationship] = []
    for position, member in enumerate(request.family_members):
        member_row = FamilyMember(
            id=uuid.uuid4(),
            referral_id=referral_id,
            position=position,
            given_names=member.given_names,
            family_name=member.family_name,
            other_names=list(member.other_names),
            date_of_birth=member.date_of_birth,
            sex=member.sex.value,
            address_lines=list(member.address.lines) if member.address else [],
            town=member.address.town if member.address else None,
            postcode=member.address.postcode if member.address else None,
            phone=member.phone,
        )
        members.append(member_row)
        relations += [
            FamilyRelationship(
                family_member_id=member_row.id,
                child_id=children[relation.child].id,
                child_position=relation.child,
                relationship=relation.relationship.value,
                parental_responsibility=relation.parental_responsibility,
                lives_with_child=relation.lives_with_child,
            )
            for relation in member.relationships
        ]
    try:
        async with session.begin_nested():
            await repository.add(referral, children, members, relations)
    except IntegrityError:
        # A concurrent request with the same idempotency key won the race.
        if idempotency_key is None:
            raise
        existing = await repository.by_idempotency_key(referrer.organisation_code, idempotency_key)
        if existing is None:
            raise
        return _replay(existing, request_fingerprint), False

    texts = await _seal_narratives(session, vault, referral_id, request, children, now)
    await repository.add_texts(texts)
    await outbox.append(
        session,
        plumbing,
        _received_event(referral, children, members, relations),
        service=SERVICE,
        now=now,
    )
    clocks = [DeadlineKind.ACKNOWLEDGEMENT, DeadlineKind.DECISION, DeadlineKind.FEEDBACK]
    if referral.raised_via == "phone":
        clocks.append(DeadlineKind.PHONE_FOLLOW_UP)
    deadlines = await start_deadlines(
        session, referral_id, clocks, start=now, policy=policy, calendar=calendar
    )
    # The referral as written, without reading it back: its collections are the rows in hand.
    set_committed_value(referral, "children", children)
    set_committed_value(referral, "family_members", members)
    for written in members:
        set_committed_value(
            written, "relationships", [r for r in relations if r.family_member_id == written.id]
        )
    set_committed_value(referral, "texts", texts)
    set_committed_value(referral, "deadlines", deadlines)
    set_committed_value(referral, "actions", [])
    return referral, True


async def _seal_narratives(
    session: AsyncSession,
    vault: Vault,
    referral_id: uuid.UUID,
    request: ReferralCreate,
    children: list[ReferralChild],
    now: datetime,
) -> list[ReferralText]:
    """One sealed copy of each narrative per child it concerns, under that child's key."""
    shared_texts = {"what_happened": request.concern.what_happened}
    if request.concern.actions_taken:
        shared_texts["actions_taken"] = request.concern.actions_taken
    sealed: list[ReferralText] = []
    for child_row, child in zip(children, request.children, strict=True):
        texts = dict(shared_texts)
        if child.own_words:
            texts["own_words"] = child.own_words
        for kind, plaintext in texts.items():
            sealed.append(
                ReferralText(
                    referral_id=referral_id,
                    subject_id=child_row.id,
                    kind=kind,
                    sealed=await vault.seal(
                        session, child_row.id, plaintext, context=text_context(referral_id, kind)
                    ),
                    written_at=now,
                )
            )
    return sealed


def _received_event(
    referral: Referral,
    children: list[ReferralChild],
    members: list[FamilyMember],
    relations: list[FamilyRelationship],
) -> ReferralReceived:
    return ReferralReceived(
        referral_id=referral.id,
        reference=referral.reference,
        received_at=referral.received_at,
        referrer_agency=referral.referrer_agency,
        referrer_organisation_code=referral.referrer_organisation_code,
        raised_via=referral.raised_via,
        concern_categories=referral.concern_categories,
        immediate_risk=referral.immediate_risk,
        consent_parents=referral.consent_parents,
        consent_parents_why_not_asked=referral.consent_parents_why_not_asked,
        consent_child=referral.consent_child,
        consent_child_competent=referral.consent_child_competent,
        consent_child_why_not_asked=referral.consent_child_why_not_asked,
        referrer_name=referral.referrer_name,
        referrer_role=referral.referrer_role,
        children=[
            ReportedChild(
                subject_id=child.id,
                given_names=child.given_names,
                family_name=child.family_name,
                other_names=child.other_names,
                date_of_birth=child.date_of_birth,
                estimated_age_years=child.estimated_age_years,
                unborn_expected_date=child.unborn_expected_date,
                sex=child.sex,
                nhs_number=child.nhs_number,
                upn=child.upn,
                postcode=child.postcode,
                school_urn=child.school_urn,
            )
            for child in children
        ],
        family_members=[
            ReportedFamilyMember(
                subject_id=member.id,
                given_names=member.given_names,
                family_name=member.family_name,
                other_names=member.other_names,
                date_of_birth=member.date_of_birth,
                sex=member.sex,
                postcode=member.postcode,
                relationships=[
                    ReportedRelationship(
                        child_subject_id=relation.child_id,
                        relationship=relation.relationship,
                        parental_responsibility=relation.parental_responsibility,
                        lives_with_child=relation.lives_with_child,
                    )
                    for relation in relations
                    if relation.family_member_id == member.id
                ],
            )
            for member in members
        ],
        acknowledgement_due_at=referral.acknowledgement_due_at,
    )


def _replay(existing: Referral, request_fingerprint: str) -> Referral:
    if existing.request_fingerprint != request_fingerprint:
        raise IdempotencyMismatch(
            "This Idempotency-Key was already used for a different referral; "
            "use a new key for a new referral.",
            referral_id=str(existing.id),
        )
    return existing


# -- reading, with per-object authorisation -------------------------------------------------


def may_read(principal: Principal, referral: Referral) -> bool:
    """The MASH reads every referral; an agency reads only its own organisation's."""
    if principal.has(MASH_SCOPE):
        return True
    return (
        principal.has("referrals:read")
        and principal.organisation_code == referral.referrer_organisation_code
    )


async def record_access(
    session: AsyncSession,
    principal: Principal,
    action: str,
    object_id: str,
    outcome: str,
    *,
    object_type: str = "referral",
) -> None:
    """One row of the access log: who read (or was refused) which case record, and when."""
    session.add(
        AccessRecord(
            principal=principal.subject,
            organisation_code=principal.organisation_code,
            agency=principal.agency,
            action=action,
            object_type=object_type,
            object_id=object_id,
            outcome=outcome,
        )
    )
    await session.flush()


@asynccontextmanager
async def refusals_recorded(
    database: Database, principal: Principal, object_type: str, object_id: str
) -> AsyncIterator[None]:
    """Record a refused read (a 404 from the block) in a transaction of its own, because the
    request's transaction rolls back with the 404."""
    try:
        yield
    except NotFound:
        async with database.transaction() as audit:
            await record_access(
                audit, principal, "read", object_id, "refused", object_type=object_type
            )
        raise


async def read_referral(
    session: AsyncSession, referral_id: uuid.UUID, principal: Principal
) -> Referral:
    """The referral if this principal may see it; otherwise 404, as if it did not exist.

    The caller records a refusal in a transaction of its own: this one rolls back with the 404.
    """
    referral = await ReferralRepository(session).get(referral_id)
    if referral is None or not may_read(principal, referral):
        raise NotFound(f"No referral {referral_id}")
    await record_access(session, principal, "read", str(referral_id), "allowed")
    return referral


@dataclass(frozen=True)
class OpenedTexts:
    """A referral's narratives as readable now (a text whose keys were all destroyed is None)."""

    what_happened: str | None
    actions_taken: str | None
    own_words: dict[uuid.UUID, str]


async def open_action_texts(
    session: AsyncSession, vault: Vault, referral: Referral
) -> dict[int, str]:
    """The reason or feedback of each MASH action, from the first child's copy still readable."""
    opened: dict[int, str] = {}
    for row in referral.texts:
        if row.action_id is None or row.action_id in opened:
            continue
        try:
            opened[row.action_id] = await vault.open(
                session,
                row.subject_id,
                row.sealed,
                context=text_context(referral.id, f"{row.kind}:{row.action_id}"),
            )
        except KeyDestroyed:
            continue
    return opened


async def open_texts(session: AsyncSession, vault: Vault, referral: Referral) -> OpenedTexts:
    shared: dict[str, str] = {}
    own_words: dict[uuid.UUID, str] = {}
    for row in referral.texts:
        if row.action_id is not None or row.kind in shared:
            continue  # action texts are opened with the history
        try:
            plaintext = await vault.open(
                session, row.subject_id, row.sealed, context=text_context(referral.id, row.kind)
            )
        except KeyDestroyed:
            continue  # this child's copy was erased; another child's copy may remain
        if row.kind == "own_words":
            own_words[row.subject_id] = plaintext
        else:
            shared[row.kind] = plaintext
    return OpenedTexts(
        what_happened=shared.get("what_happened"),
        actions_taken=shared.get("actions_taken"),
        own_words=own_words,
    )


# -- deadlines --------------------------------------------------------------------------------


async def start_deadline(
    session: AsyncSession,
    referral_id: uuid.UUID,
    kind: DeadlineKind,
    *,
    start: datetime,
    policy: DeadlinePolicy,
    calendar: WorkingDayCalendar,
) -> ReferralDeadline:
    [deadline] = await start_deadlines(
        session, referral_id, [kind], start=start, policy=policy, calendar=calendar
    )
    return deadline


async def start_deadlines(
    session: AsyncSession,
    referral_id: uuid.UUID,
    kinds: list[DeadlineKind],
    *,
    start: datetime,
    policy: DeadlinePolicy,
    calendar: WorkingDayCalendar,
) -> list[ReferralDeadline]:
    """Start clocks: one row each (shown on the referral) and a durable timer each."""
    deadlines = [
        ReferralDeadline(
            id=uuid.uuid4(),
            referral_id=referral_id,
            kind=kind.value,
            started_at=start,
            due_at=policy.due(kind, start, calendar),
        )
        for kind in kinds
    ]
    session.add_all(deadlines)
    await session.flush()
    await timers.schedule_many(
        session,
        plumbing,
        [
            timers.TimerRequest(
                kind=DEADLINE_TIMER,
                aggregate_id=str(deadline.id),
                due_at=deadline.due_at,
                payload={"referral_id": str(referral_id), "kind": deadline.kind},
            )
            for deadline in deadlines
        ],
    )
    return deadlines


def _open_deadlines(referral: Referral, kind: DeadlineKind) -> list[ReferralDeadline]:
    return [
        deadline
        for deadline in referral.deadlines
        if deadline.kind == kind.value and deadline.met_at is None and deadline.cancelled_at is None
    ]


async def _settle(
    session: AsyncSession, referral: Referral, kind: DeadlineKind, now: datetime, *, met: bool
) -> bool:
    """Mark the open deadlines of ``kind`` met (or cancelled) and stop their timers.

    Returns whether every one of them was met on time (True when there were none).
    """
    on_time = True
    for deadline in _open_deadlines(referral, kind):
        if not met and deadline.missed_at is not None:
            continue  # a miss already escalated stays on the record as missed
        if met:
            deadline.met_at = now
            on_time = on_time and now <= deadline.due_at
        else:
            deadline.cancelled_at = now
        await timers.cancel(
            session, plumbing, kind=DEADLINE_TIMER, aggregate_id=str(deadline.id), now=now
        )
    await session.flush()
    return on_time


_MISSED_EVENTS: dict[DeadlineKind, type[DeadlineMissed]] = {
    DeadlineKind.DECISION: ReferralDecisionOverdue,
    DeadlineKind.FEEDBACK: ReferralFeedbackOverdue,
    DeadlineKind.ASSESSMENT: ReferralAssessmentOverdue,
    DeadlineKind.PHONE_FOLLOW_UP: ReferralPhoneFollowUpDue,
}


async def deadline_missed(session: AsyncSession, timer: DueTimer, now: datetime) -> None:
    """Timer handler: a deadline passed unmet. Record it and announce it for escalation."""
    repository = ReferralRepository(session)
    referral = await repository.get(uuid.UUID(timer.payload["referral_id"]), for_update=True)
    if referral is None:
        return
    deadline = next((d for d in referral.deadlines if str(d.id) == timer.aggregate_id), None)
    if deadline is None or deadline.met_at is not None or deadline.cancelled_at is not None:
        return
    deadline.missed_at = now
    await session.flush()
    kind = DeadlineKind(deadline.kind)
    event: ReferralAckOverdue | DeadlineMissed
    if kind is DeadlineKind.ACKNOWLEDGEMENT:
        event = ReferralAckOverdue(
            referral_id=referral.id,
            reference=referral.reference,
            referrer_organisation_code=referral.referrer_organisation_code,
            acknowledgement_due_at=deadline.due_at,
            detected_at=now,
        )
    else:
        event = _MISSED_EVENTS[kind](
            referral_id=referral.id,
            reference=referral.reference,
            referrer_organisation_code=referral.referrer_organisation_code,
            raised_via=referral.raised_via,
            due_at=deadline.due_at,
            detected_at=now,
        )
    await outbox.append(session, plumbing, event, service=SERVICE, now=now)


# -- MASH actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """Who acts: the person named in the request, through an authenticated client."""

    name: str
    principal: Principal


async def _for_action(session: AsyncSession, referral_id: uuid.UUID) -> Referral:
    referral = await ReferralRepository(session).get(referral_id, for_update=True)
    if referral is None:
        raise NotFound(f"No referral {referral_id}")
    return referral


async def _record_action(
    session: AsyncSession,
    vault: Vault,
    referral: Referral,
    action: str,
    actor: Actor,
    now: datetime,
    *,
    value: str | None = None,
    text: str | None = None,
) -> ReferralAction:
    """Add to the referral's history; a reason or feedback text is sealed for every child."""
    row = ReferralAction(
        referral_id=referral.id,
        action=action,
        at=now,
        by_name=actor.name,
        by_client=actor.principal.subject,
        by_organisation=actor.principal.organisation_code,
        value=value,
    )
    session.add(row)
    await session.flush()
    if text is not None:
        kind = f"{action}_text"
        session.add_all(
            [
                ReferralText(
                    referral_id=referral.id,
                    subject_id=child.id,
                    kind=kind,
                    sealed=await vault.seal(
                        session,
                        child.id,
                        text,
                        context=text_context(referral.id, f"{kind}:{row.id}"),
                    ),
                    written_at=now,
                    action_id=row.id,
                )
                for child in referral.children
            ]
        )
        await session.flush()
    return row


async def _acknowledge(
    session: AsyncSession, vault: Vault, referral: Referral, actor: Actor, now: datetime
) -> None:
    referral.status = "acknowledged"
    referral.acknowledged_at = now
    referral.acknowledged_by = actor.name
    on_time = await _settle(session, referral, DeadlineKind.ACKNOWLEDGEMENT, now, met=True)
    await _record_action(session, vault, referral, "acknowledged", actor, now)
    await outbox.append(
        session,
        plumbing,
        ReferralAcknowledged(
            referral_id=referral.id,
            reference=referral.reference,
            acknowledged_at=now,
            acknowledged_by=actor.name,
            within_deadline=on_time,
        ),
        service=SERVICE,
        now=now,
    )


async def acknowledge(
    session: AsyncSession,
    vault: Vault,
    referral_id: uuid.UUID,
    *,
    actor: Actor,
    now: datetime,
) -> None:
    """Record the MASH's acknowledgement and stop the acknowledgement clock."""
    referral = await _for_action(session, referral_id)
    if referral.acknowledged_at is not None:
        raise Conflict(
            f"Referral {referral.reference} was already acknowledged",
            acknowledged_at=referral.acknowledged_at.isoformat(),
        )
    await _acknowledge(session, vault, referral, actor, now)


async def rate(
    session: AsyncSession,
    vault: Vault,
    referral_id: uuid.UUID,
    *,
    rag: str,
    reason: str,
    actor: Actor,
    now: datetime,
) -> None:
    referral = await _for_action(session, referral_id)
    referral.rag = rag
    referral.rated_at = now
    await _record_action(session, vault, referral, "rated", actor, now, value=rag, text=reason)
    await outbox.append(
        session,
        plumbing,
        ReferralRated(
            referral_id=referral.id,
            reference=referral.reference,
            rag=rag,
            rated_at=now,
            rated_by=actor.name,
        ),
        service=SERVICE,
        now=now,
    )


async def decide(
    session: AsyncSession,
    vault: Vault,
    referral_id: uuid.UUID,
    *,
    decision: Decision,
    reason: str,
    actor: Actor,
    now: datetime,
    policy: DeadlinePolicy,
    calendar: WorkingDayCalendar,
) -> None:
    """Decide the type of response; deciding also acknowledges a referral not yet acknowledged."""
    referral = await _for_action(session, referral_id)
    if referral.decision is not None:
        raise Conflict(
            f"Referral {referral.reference} was already decided ({referral.decision}); "
            "reopen it to decide again"
        )
    if referral.acknowledged_at is None:
        await _acknowledge(session, vault, referral, actor, now)
    on_time = await _settle(session, referral, DeadlineKind.DECISION, now, met=True)
    referral.decision = decision.value
    referral.decided_at = now
    referral.decided_by = actor.name
    referral.status = "decided"
    assessment_due = None
    if decision in ASSESSMENT_DECISIONS:
        deadline = await start_deadline(
            session,
            referral.id,
            DeadlineKind.ASSESSMENT,
            start=now,
            policy=policy,
            calendar=calendar,
        )
        assessment_due = deadline.due_at
    await _record_action(
        session, vault, referral, "decided", actor, now, value=decision.value, text=reason
    )
    await outbox.append(
        session,
        plumbing,
        ReferralDecided(
            referral_id=referral.id,
            reference=referral.reference,
            decision=decision.value,
            decided_at=now,
            decided_by=actor.name,
            within_deadline=on_time,
            assessment_due_at=assessment_due,
        ),
        service=SERVICE,
        now=now,
    )


async def give_feedback(
    session: AsyncSession,
    vault: Vault,
    referral_id: uuid.UUID,
    *,
    message: str,
    actor: Actor,
    now: datetime,
) -> None:
    """Feedback to the referrer on what is being done; it ends the feedback (and phone) clocks."""
    referral = await _for_action(session, referral_id)
    if referral.decision is None:
        raise Conflict(
            f"Referral {referral.reference} has no decision yet: feedback tells the referrer "
            "what action is being taken, so decide first"
        )
    on_time = await _settle(session, referral, DeadlineKind.FEEDBACK, now, met=True)
    await _settle(session, referral, DeadlineKind.PHONE_FOLLOW_UP, now, met=False)
    row = await _record_action(session, vault, referral, "feedback", actor, now, text=message)
    await outbox.append(
        session,
        plumbing,
        ReferralFeedbackSent(
            referral_id=referral.id,
            reference=referral.reference,
            referrer_organisation_code=referral.referrer_organisation_code,
            feedback_id=row.id,
            sent_at=now,
            within_deadline=on_time,
        ),
        service=SERVICE,
        now=now,
    )


async def complete_assessment(
    session: AsyncSession, vault: Vault, referral_id: uuid.UUID, *, actor: Actor, now: datetime
) -> None:
    referral = await _for_action(session, referral_id)
    if referral.decision not in {d.value for d in ASSESSMENT_DECISIONS}:
        raise Conflict(
            f"Referral {referral.reference} has no section 17 or section 47 decision to assess"
        )
    if referral.assessment_completed_at is not None:
        raise Conflict(f"The assessment of {referral.reference} is already complete")
    on_time = await _settle(session, referral, DeadlineKind.ASSESSMENT, now, met=True)
    referral.assessment_completed_at = now
    referral.status = "assessment_completed"
    await _record_action(session, vault, referral, "assessment_completed", actor, now)
    await outbox.append(
        session,
        plumbing,
        ReferralAssessmentCompleted(
            referral_id=referral.id,
            reference=referral.reference,
            completed_at=now,
            within_deadline=on_time,
        ),
        service=SERVICE,
        now=now,
    )


async def reopen(
    session: AsyncSession,
    vault: Vault,
    referral_id: uuid.UUID,
    *,
    reason: str,
    actor: Actor,
    now: datetime,
    policy: DeadlinePolicy,
    calendar: WorkingDayCalendar,
) -> None:
    """Reopen a decided referral: the decision is kept in the history, new clocks start."""
    referral = await _for_action(session, referral_id)
    if referral.decision is None:
        raise Conflict(f"Referral {referral.reference} is still open; nothing to reopen")
    await _settle(session, referral, DeadlineKind.ASSESSMENT, now, met=False)
    referral.decision = None
    referral.decided_at = None
    referral.decided_by = None
    referral.assessment_completed_at = None
    referral.status = "reopened"
    decision = await start_deadline(
        session, referral.id, DeadlineKind.DECISION, start=now, policy=policy, calendar=calendar
    )
    feedback = await start_deadline(
        session, referral.id, DeadlineKind.FEEDBACK, start=now, policy=policy, calendar=calendar
    )
    await _record_action(session, vault, referral, "reopened", actor, now, text=reason)
    await outbox.append(
        session,
        plumbing,
        ReferralReopened(
            referral_id=referral.id,
            reference=referral.reference,
            reopened_at=now,
            reopened_by=actor.name,
            decision_due_at=decision.due_at,
            feedback_due_at=feedback.due_at,
        ),
        service=SERVICE,
        now=now,
    )
