"""Turning referral events into work for the MASH. No commit here: the message scope owns it."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.models import InboxItem
from services.notifications.repository import InboxRepository
from services.referrals.events import ReferralAcknowledged, ReferralAckOverdue, ReferralReceived
from shared.calendar import LONDON
from shared.events.envelope import Envelope

NEW_REFERRAL = "new_referral"
ACK_OVERDUE = "acknowledgement_overdue"


def _local(moment: datetime) -> str:
    """A deadline as a person in England reads it: 'end of Monday 23 November 2026'."""
    local = moment.astimezone(LONDON)
    if local.time() == time(0, 0):
        # Working-day deadlines are the end of a day: name that day, not the next midnight.
        return (local - timedelta(days=1)).strftime("end of %A %-d %B %Y")
    return local.strftime("%H:%M on %A %-d %B %Y")


RAISED_VIA = {
    "phone": "by telephone",
    "online": "through an online form",
    "portal": "through the Threadline portal",
}


def _children(event: ReferralReceived) -> str:
    count = len(event.children)
    return "1 child" if count == 1 else f"{count} children"


async def referral_received(
    session: AsyncSession, event: ReferralReceived, envelope: Envelope
) -> None:
    categories = ", ".join(category.replace("_", " ") for category in event.concern_categories)
    await InboxRepository(session).add(
        InboxItem(
            id=uuid.uuid4(),
            source_event_id=envelope.id,
            kind=NEW_REFERRAL,
            audience="mash_worker",
            referral_id=event.referral_id,
            referral_reference=event.reference,
            title=f"New referral {event.reference} about {_children(event)}",
            body=(
                f"From {event.referrer_agency.replace('_', ' ')} "
                f"({event.referrer_organisation_code}), raised "
                f"{RAISED_VIA.get(event.raised_via, event.raised_via)}. "
                f"Concerns: {categories}. "
                f"Acknowledge to the referrer by {_local(event.acknowledgement_due_at)}."
            ),
            due_at=event.acknowledgement_due_at,
            status="open",
            created_at=envelope.time,
            correlation_id=envelope.correlation_id,
        )
    )


async def referral_acknowledged(
    session: AsyncSession, event: ReferralAcknowledged, envelope: Envelope
) -> None:
    repository = InboxRepository(session)
    await repository.resolve(event.referral_id, NEW_REFERRAL, event.acknowledged_at)
    await repository.resolve(event.referral_id, ACK_OVERDUE, event.acknowledged_at)


async def acknowledgement_overdue(
    session: AsyncSession, event: ReferralAckOverdue, envelope: Envelope
) -> None:
    await InboxRepository(session).add(
        InboxItem(
            id=uuid.uuid4(),
            source_event_id=envelope.id,
            kind=ACK_OVERDUE,
            audience="mash_manager",
            referral_id=event.referral_id,
            referral_reference=event.reference,
            title=f"Escalation: referral {event.reference} not acknowledged in time",
            body=(
                f"The referral from {event.referrer_organisation_code} was due to be acknowledged "
                f"by {_local(event.acknowledgement_due_at)} and has not been. The referrer is "
                "waiting to hear that their concern was received."
            ),
            due_at=None,
            status="open",
            created_at=envelope.time,
            correlation_id=envelope.correlation_id,
        )
    )
