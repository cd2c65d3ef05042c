"""Referral use cases. No HTTP here and no commit: the caller's scope owns the transaction."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals.events import (
    ReferralAcknowledged,
    ReferralAckOverdue,
    ReferralReceived,
    ReportedChild,
    ReportedFamilyMember,
    ReportedRelationship,
)
from services.referrals.models import (
    AccessRecord,
    FamilyMember,
    FamilyRelationship,
    Referral,
    ReferralChild,
    ReferralText,
    plumbing,
)
from services.referrals.repository import ReferralRepository
from services.referrals.schemas import ReferralCreate
from shared import outbox, timers
from shared.auth import Principal
from shared.calendar import WorkingDayCalendar
from shared.crypto import KeyDestroyed, Vault
from shared.errors import Conflict, NotFound
from shared.timers import DueTimer

SERVICE = "referrals"
ACK_TIMER = "referral.acknowledgement_due"
MASH_SCOPE = "mash:triage"


class IdempotencyMismatch(Conflict):
    title = "Idempotency key reused"


def fingerprint(request: ReferralCreate) -> str:
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
    acknowledgement_working_days: int,
    idempotency_key: str | None,
) -> tuple[Referral, bool]:
    """Store a referral, seal its narratives, announce it and start its acknowledgement clock.

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
    due_at = calendar.add_working_days(now, acknowledgement_working_days)
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
            given_names=child.given_names,
            family_name=child.family_name,
            other_names=list(child.other_names),
            date_of_birth=child.date_of_birth,
            estimated_age_years=child.estimated_age_years,
            unborn_expected_date=child.unborn.expected_date if child.unborn else None,
            sex=child.sex.value,
            nhs_number=child.nhs_number,
            upn=child.upn,
            address_lines=list(child.address.lines) if child.address else [],
            town=child.address.town if child.address else None,
            postcode=child.address.postcode if child.address else None,
            school_urn=child.school.urn if child.school else None,
            school_name=child.school.name if child.school else None,
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

    await repository.add_texts(
        await _seal_narratives(session, vault, referral_id, request, children, now)
    )
    await outbox.append(
        session,
        plumbing,
        _received_event(referral, children, members, relations),
        service=SERVICE,
        now=now,
    )
    await timers.schedule(
        session, plumbing, kind=ACK_TIMER, aggregate_id=str(referral_id), due_at=due_at
    )
    loaded = await repository.get(referral_id)
    assert loaded is not None
    return loaded, True


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
        consent_child=referral.consent_child,
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
    session: AsyncSession, principal: Principal, action: str, object_id: str, outcome: str
) -> None:
    session.add(
        AccessRecord(
            principal=principal.subject,
            organisation_code=principal.organisation_code,
            agency=principal.agency,
            action=action,
            object_type="referral",
            object_id=object_id,
            outcome=outcome,
        )
    )
    await session.flush()


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


async def open_texts(session: AsyncSession, vault: Vault, referral: Referral) -> OpenedTexts:
    shared: dict[str, str] = {}
    own_words: dict[uuid.UUID, str] = {}
    for row in referral.texts:
        if row.kind in shared:
            continue
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


async def acknowledge(
    session: AsyncSession, referral_id: uuid.UUID, *, acknowledged_by: str, now: datetime
) -> Referral:
    """Record the MASH's acknowledgement and stop the acknowledgement clock."""
    repository = ReferralRepository(session)
    referral = await repository.get(referral_id, for_update=True)
    if referral is None:
        raise NotFound(f"No referral {referral_id}")
    if referral.acknowledged_at is not None:
        raise Conflict(
            f"Referral {referral.reference} was already acknowledged",
            acknowledged_at=referral.acknowledged_at.isoformat(),
        )
    referral.status = "acknowledged"
    referral.acknowledged_at = now
    referral.acknowledged_by = acknowledged_by
    await session.flush()
    await timers.cancel(session, plumbing, kind=ACK_TIMER, aggregate_id=str(referral.id), now=now)
    await outbox.append(
        session,
        plumbing,
        ReferralAcknowledged(
            referral_id=referral.id,
            reference=referral.reference,
            acknowledged_at=now,
            acknowledged_by=acknowledged_by,
            within_deadline=now <= referral.acknowledgement_due_at,
        ),
        service=SERVICE,
        now=now,
    )
    return referral


async def acknowledgement_overdue(session: AsyncSession, timer: DueTimer, now: datetime) -> None:
    """Timer handler: the acknowledgement deadline passed; announce it unless already met."""
    referral = await ReferralRepository(session).get(uuid.UUID(timer.aggregate_id), for_update=True)
    if referral is None or referral.acknowledged_at is not None:
        return
    await outbox.append(
        session,
        plumbing,
        ReferralAckOverdue(
            referral_id=referral.id,
            reference=referral.reference,
            referrer_organisation_code=referral.referrer_organisation_code,
            acknowledgement_due_at=referral.acknowledgement_due_at,
            detected_at=now,
        ),
        service=SERVICE,
        now=now,
    )
