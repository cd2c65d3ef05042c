"""Referral use cases. No HTTP here and no commit: the caller's scope owns the transaction."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.consent.events import RetentionExpired
from services.referrals import disclosure
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
    ReferralReopened,
)
from services.referrals.models import (
    AccessRecord,
    Referral,
    ReferralAction,
    ReferralDeadline,
    ReferralText,
    plumbing,
)
from services.referrals.policy import DeadlineKind, DeadlinePolicy
from services.referrals.repository import ReferralRepository
from services.referrals.schemas import Decision
from shared import outbox, timers
from shared.auth import Principal
from shared.calendar import WorkingDayCalendar
from shared.crypto import KeyDestroyed, Vault
from shared.db import Database
from shared.errors import Conflict, NotFound
from shared.ids import uuid7
from shared.logging import get_logger
from shared.timers import DueTimer

log = get_logger(__name__)
SERVICE = "referrals"
DEADLINE_TIMER = "referral.deadline"
MASH_SCOPE = "mash:triage"
ASSESSMENT_DECISIONS = frozenset({Decision.SECTION_17, Decision.SECTION_47_STRATEGY})


class IdempotencyMismatch(Conflict):
    title = "Idempotency key reused"


def fingerprint(request: BaseModel) -> str:
    """What makes two requests "the same body" for an idempotent retry."""
    # The validated model in its own field order: whitespace, key order and spellings the model
    # normalises away (e.g. a postcode's case) do not make a retry "a different body".
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()


def text_context(referral_id: uuid.UUID, kind: str) -> str:
    """What a sealed text is bound to: it opens only as this kind of text of this referral."""
    return f"referrals.referral_texts:{referral_id}:{kind}"


async def replayed_referral(
    session: AsyncSession, *, organisation_code: str, idempotency_key: str, request_fingerprint: str
) -> Referral:
    """The referral an earlier request with this Idempotency-Key made (409 if its body differed)."""
    existing = await ReferralRepository(session).by_idempotency_key(
        organisation_code, idempotency_key
    )
    if existing is None:  # the intake batch found the key, and referrals are never deleted
        raise RuntimeError("an idempotent replay found no referral for its key")
    if existing.request_fingerprint != request_fingerprint:
        raise IdempotencyMismatch(
            "This Idempotency-Key was already used for a different referral; "
            "use a new key for a new referral.",
            referral_id=str(existing.id),
        )
    return existing


# -- retention --------------------------------------------------------------------------------


CASE_NARRATIVE = "case_narrative"


async def narratives_expired(session: AsyncSession, vault: Vault, event: RetentionExpired) -> None:
    """Crypto-shred a subject's narratives: destroy the data key every copy is sealed under.

    Every text sealed for that child (what happened, what was done, their own words, MASH
    reasons and feedback) becomes unreadable; siblings' copies, under their own keys, stay. The
    destroyed key's row is kept with its time, as proof of erasure, and nothing can be sealed
    for the subject again. Other record types are not held here.
    """
    if event.record_type != CASE_NARRATIVE:
        return
    destroyed = await vault.destroy(session, event.subject_id)
    log.info(
        "referrals.narratives_shredded",
        subject_id=str(event.subject_id),
        referrals=[str(referral_id) for referral_id in event.referral_ids],
        already_destroyed=not destroyed,
        ledger_sequence=event.ledger_sequence,
    )


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
            id=uuid7(),
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
    referral_id = uuid.UUID(timer.payload["referral_id"])
    referral = await repository.get(referral_id, for_update=True, skip_locked=True)
    if referral is None:
        if await repository.exists(referral_id):
            # A MASH action holds the referral and may be settling this deadline: try again
            # at the next poll rather than wait for it (timers.TimerDeferred says why).
            raise timers.TimerDeferred(timer.aggregate_id)
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
    idempotency_key: str | None = None,
    disclosure_decision_id: uuid.UUID | None = None,
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
        idempotency_key=idempotency_key,
        disclosure_decision_id=disclosure_decision_id,
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


async def _feedback_given(
    session: AsyncSession, referral_id: uuid.UUID, idempotency_key: str | None
) -> bool:
    if idempotency_key is None:
        return False
    already = await session.scalar(
        select(ReferralAction.id).where(
            ReferralAction.referral_id == referral_id,
            ReferralAction.idempotency_key == idempotency_key,
        )
    )
    return already is not None


def _decided_first(referral: Referral) -> None:
    if referral.decision is None:
        raise Conflict(
            f"Referral {referral.reference} has no decision yet: feedback tells the referrer "
            "what action is being taken, so decide first"
        )


async def feedback_recipient(
    session: AsyncSession, referral_id: uuid.UUID, idempotency_key: str | None
) -> disclosure.Referrer | None:
    """Whom feedback on this referral would disclose to, and about which children, for the
    decision point (404 and 409 as ``give_feedback``); None when a retry with the same
    ``idempotency_key`` finds the feedback already given."""
    referral = await ReferralRepository(session).get(referral_id)
    if referral is None:
        raise NotFound(f"No referral {referral_id}")
    if await _feedback_given(session, referral.id, idempotency_key):
        return None
    _decided_first(referral)
    return disclosure.Referrer(
        reference=referral.reference,
        agency=referral.referrer_agency,
        organisation_code=referral.referrer_organisation_code,
        name=referral.referrer_name,
        children=tuple(child.id for child in referral.children),
    )


async def give_feedback(
    session: AsyncSession,
    vault: Vault,
    referral_id: uuid.UUID,
    *,
    message: str,
    actor: Actor,
    now: datetime,
    idempotency_key: str | None = None,
    disclosure_decision_id: uuid.UUID | None = None,
) -> None:
    """Feedback to the referrer on what is being done; it ends the feedback (and phone) clocks.
    ``disclosure_decision_id``: the decision point's decision to share it (disclosure.py).
    A retry with the same ``idempotency_key`` finds the feedback already given and does nothing
    (the referral's row lock orders it after the first, so it sees it)."""
    referral = await _for_action(session, referral_id)
    if await _feedback_given(session, referral.id, idempotency_key):
        return
    _decided_first(referral)
    on_time = await _settle(session, referral, DeadlineKind.FEEDBACK, now, met=True)
    await _settle(session, referral, DeadlineKind.PHONE_FOLLOW_UP, now, met=False)
    row = await _record_action(
        session,
        vault,
        referral,
        "feedback",
        actor,
        now,
        text=message,
        idempotency_key=idempotency_key,
        disclosure_decision_id=disclosure_decision_id,
    )
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
            disclosure_decision_id=disclosure_decision_id,
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
