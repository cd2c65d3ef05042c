"""Referral use cases. No HTTP here and no commit: the caller's scope owns the transaction."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals.events import (
    ReferralAcknowledged,
    ReferralAckOverdue,
    ReferralReceived,
    ReportedChild,
)
from services.referrals.models import Referral, ReferralChild, plumbing
from services.referrals.repository import ReferralRepository
from services.referrals.schemas import ReferralCreate
from shared import outbox, timers
from shared.calendar import WorkingDayCalendar
from shared.errors import Conflict, DomainError, NotFound
from shared.timers import DueTimer

SERVICE = "referrals"
ACK_TIMER = "referral.acknowledgement_due"


class IdempotencyMismatch(DomainError):
    status_code = 422
    title = "Idempotency key reused"


def fingerprint(request: ReferralCreate) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def receive_referral(
    session: AsyncSession,
    request: ReferralCreate,
    *,
    now: datetime,
    calendar: WorkingDayCalendar,
    acknowledgement_working_days: int,
    idempotency_key: str | None,
) -> tuple[Referral, bool]:
    """Store a referral, announce it and start its acknowledgement clock.

    Returns the referral and whether it was created now (False: an idempotent replay).
    """
    repository = ReferralRepository(session)
    request_fingerprint = fingerprint(request)
    if idempotency_key is not None:
        existing = await repository.by_idempotency_key(
            request.referrer.organisation_code, idempotency_key
        )
        if existing is not None:
            return _replay(existing, request_fingerprint), False

    referral_id = uuid.uuid4()
    number = await repository.next_number()
    due_at = calendar.add_working_days(now, acknowledgement_working_days)
    referral = Referral(
        id=referral_id,
        reference=f"TL-{now.year}-{number:06d}",
        status="received",
        received_at=now,
        referrer_agency=request.referrer.agency.value,
        referrer_organisation_code=request.referrer.organisation_code,
        referrer_organisation_name=request.referrer.organisation_name,
        referrer_name=request.referrer.name,
        referrer_role=request.referrer.role,
        referrer_email=request.referrer.email,
        referrer_phone=request.referrer.phone,
        raised_via=request.referrer.raised_via.value,
        concern_categories=[category.value for category in request.concern.categories],
        concern_summary=request.concern.summary,
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
            date_of_birth=child.date_of_birth,
        )
        for position, child in enumerate(request.children)
    ]
    try:
        async with session.begin_nested():
            await repository.add(referral, children)
    except IntegrityError:
        # A concurrent request with the same idempotency key won the race.
        if idempotency_key is None:
            raise
        existing = await repository.by_idempotency_key(
            request.referrer.organisation_code, idempotency_key
        )
        if existing is None:
            raise
        return _replay(existing, request_fingerprint), False

    await outbox.append(
        session,
        plumbing,
        ReferralReceived(
            referral_id=referral_id,
            reference=referral.reference,
            received_at=now,
            referrer_agency=referral.referrer_agency,
            referrer_organisation_code=referral.referrer_organisation_code,
            raised_via=referral.raised_via,
            concern_categories=referral.concern_categories,
            children=[
                ReportedChild(
                    subject_id=child.id,
                    given_names=child.given_names,
                    family_name=child.family_name,
                    date_of_birth=child.date_of_birth,
                )
                for child in children
            ],
            acknowledgement_due_at=due_at,
        ),
        service=SERVICE,
        now=now,
    )
    await timers.schedule(
        session, plumbing, kind=ACK_TIMER, aggregate_id=str(referral_id), due_at=due_at
    )
    loaded = await repository.get(referral_id)
    assert loaded is not None
    return loaded, True


def _replay(existing: Referral, request_fingerprint: str) -> Referral:
    if existing.request_fingerprint != request_fingerprint:
        raise IdempotencyMismatch(
            "This Idempotency-Key was already used for a different referral; "
            "use a new key for a new referral.",
            referral_id=str(existing.id),
        )
    return existing


async def get_referral(session: AsyncSession, referral_id: uuid.UUID) -> Referral:
    referral = await ReferralRepository(session).get(referral_id)
    if referral is None:
        raise NotFound(f"No referral {referral_id}")
    return referral


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
