"""Turning referral events into work for the MASH. No commit here: the message scope owns it."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.repository import InboxRepository
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
    ReferralReceived,
)
from shared.calendar import LONDON
from shared.events.envelope import Envelope
from shared.ids import uuid7

NEW_REFERRAL = "new_referral"
ACK_OVERDUE = "acknowledgement_overdue"
DECISION_OVERDUE = "decision_overdue"
FEEDBACK_OVERDUE = "feedback_overdue"
ASSESSMENT_OVERDUE = "assessment_overdue"
REFERRER_MAY_CHASE = "referrer_may_chase"  # followed by ":<deadline>"
PHONE_FOLLOW_UP = "phone_follow_up_prompt"


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


def _row(
    envelope: Envelope,
    *,
    kind: str,
    audience: str,
    referral_id: uuid.UUID,
    reference: str,
    title: str,
    body: str,
    due_at: datetime | None = None,
    organisation_code: str | None = None,
) -> dict[str, Any]:
    """An inbox item raised by an event, as the row ``InboxRepository.add`` takes."""
    return {
        "id": uuid7(),
        "source_event_id": envelope.id,
        "kind": kind,
        "audience": audience,
        "organisation_code": organisation_code,
        "referral_id": referral_id,
        "referral_reference": reference,
        "title": title,
        "body": body,
        "due_at": due_at,
        "status": "open",
        "created_at": envelope.time,
        "resolved_at": None,
        "correlation_id": envelope.correlation_id,
    }


def new_referral_item(event: ReferralReceived, envelope: Envelope) -> dict[str, Any]:
    """The MASH inbox item a new referral raises."""
    categories = ", ".join(category.replace("_", " ") for category in event.concern_categories)
    return _row(
        envelope,
        kind=NEW_REFERRAL,
        audience="mash_worker",
        referral_id=event.referral_id,
        reference=event.reference,
        title=f"New referral {event.reference} about {_children(event)}",
        body=(
            f"From {event.referrer_agency.replace('_', ' ')} "
            f"({event.referrer_organisation_code}), raised "
            f"{RAISED_VIA.get(event.raised_via, event.raised_via)}. "
            f"Concerns: {categories}. "
            f"Acknowledge to the referrer by {_local(event.acknowledgement_due_at)}."
        ),
        due_at=event.acknowledgement_due_at,
    )


async def referral_received(
    session: AsyncSession, event: ReferralReceived, envelope: Envelope
) -> None:
    await InboxRepository(session).add([new_referral_item(event, envelope)])


async def referral_acknowledged(
    session: AsyncSession, event: ReferralAcknowledged, envelope: Envelope
) -> None:
    await InboxRepository(session).resolve(
        event.referral_id,
        (NEW_REFERRAL, ACK_OVERDUE, f"{REFERRER_MAY_CHASE}:acknowledgement"),
        event.acknowledged_at,
    )


async def referral_decided(
    session: AsyncSession, event: ReferralDecided, envelope: Envelope
) -> None:
    await InboxRepository(session).resolve(
        event.referral_id, (DECISION_OVERDUE, f"{REFERRER_MAY_CHASE}:decision"), event.decided_at
    )


async def feedback_sent(
    session: AsyncSession, event: ReferralFeedbackSent, envelope: Envelope
) -> None:
    await InboxRepository(session).resolve(
        event.referral_id,
        (FEEDBACK_OVERDUE, f"{REFERRER_MAY_CHASE}:feedback", PHONE_FOLLOW_UP),
        event.sent_at,
    )


async def assessment_completed(
    session: AsyncSession, event: ReferralAssessmentCompleted, envelope: Envelope
) -> None:
    await InboxRepository(session).resolve(
        event.referral_id,
        (ASSESSMENT_OVERDUE, f"{REFERRER_MAY_CHASE}:assessment"),
        event.completed_at,
    )


def _item(
    envelope: Envelope,
    event: DeadlineMissed,
    *,
    kind: str,
    audience: str,
    title: str,
    body: str,
    organisation_code: str | None = None,
) -> dict[str, Any]:
    return _row(
        envelope,
        kind=kind,
        audience=audience,
        organisation_code=organisation_code,
        referral_id=event.referral_id,
        reference=event.reference,
        title=title,
        body=body,
    )


# What the referrer is owed when each deadline passes, in their words.
_OWED = {
    "acknowledgement": "an acknowledgement that your referral was received",
    "decision": "to hear what type of response the MASH has decided on",
    "feedback": "feedback on what action is being taken",
    "assessment": "to hear that the assessment of the child's needs is complete",
}


def _referrer_may_chase(
    envelope: Envelope, event: DeadlineMissed | ReferralAckOverdue, deadline: str, due: datetime
) -> dict[str, Any]:
    """Tell the referrer, plainly, that they should follow up, and how (Derby: "If you do not
    receive feedback on a referral in 3 days … make sure you follow this up")."""
    return _row(
        envelope,
        kind=f"{REFERRER_MAY_CHASE}:{deadline}",
        audience="referrer",
        organisation_code=event.referrer_organisation_code,
        referral_id=event.referral_id,
        reference=event.reference,
        title=f"Referral {event.reference}: you should have heard from the MASH by now",
        body=(
            f"You were due {_OWED[deadline]} by {_local(due)}. "
            "Please follow this up: call the MASH duty line and quote the reference "
            f"{event.reference}. If you remain worried about the child, escalate using your "
            "partnership's escalation procedure, and if a child is in immediate danger, call 999."
        ),
    )


async def decision_overdue(
    session: AsyncSession, event: ReferralDecisionOverdue, envelope: Envelope
) -> None:
    await InboxRepository(session).add(
        [
            _item(
                envelope,
                event,
                kind=DECISION_OVERDUE,
                audience="mash_manager",
                title=f"Escalation: no decision on referral {event.reference} in time",
                body=(
                    f"The type of response to the referral from "
                    f"{event.referrer_organisation_code} was due by {_local(event.due_at)} "
                    "and has not been decided."
                ),
            ),
            _referrer_may_chase(envelope, event, "decision", event.due_at),
        ]
    )


async def assessment_overdue(
    session: AsyncSession, event: ReferralAssessmentOverdue, envelope: Envelope
) -> None:
    await InboxRepository(session).add(
        [
            _item(
                envelope,
                event,
                kind=ASSESSMENT_OVERDUE,
                audience="mash_manager",
                title=f"Escalation: assessment for referral {event.reference} is overdue",
                body=f"The assessment was due to be completed by {_local(event.due_at)}.",
            ),
            _referrer_may_chase(envelope, event, "assessment", event.due_at),
        ]
    )


async def feedback_overdue(
    session: AsyncSession, event: ReferralFeedbackOverdue, envelope: Envelope
) -> None:
    """Escalate to the manager, and tell the referrer plainly that they may chase, and how."""
    await InboxRepository(session).add(
        [
            _item(
                envelope,
                event,
                kind=FEEDBACK_OVERDUE,
                audience="mash_manager",
                title=f"Escalation: no feedback to the referrer of {event.reference}",
                body=(
                    f"{event.referrer_organisation_code} was due feedback by "
                    f"{_local(event.due_at)} and has not had it."
                ),
            ),
            _referrer_may_chase(envelope, event, "feedback", event.due_at),
        ]
    )


async def phone_follow_up_due(
    session: AsyncSession, event: ReferralPhoneFollowUpDue, envelope: Envelope
) -> None:
    await InboxRepository(session).add(
        [
            _item(
                envelope,
                event,
                kind=PHONE_FOLLOW_UP,
                audience="referrer",
                organisation_code=event.referrer_organisation_code,
                title=f"Please confirm your telephone referral {event.reference} in writing",
                body=(
                    "You made this referral by telephone. Please confirm it in writing now, "
                    f"quoting {event.reference}, so that the MASH has your concern in your words."
                ),
            )
        ]
    )


async def acknowledgement_overdue(
    session: AsyncSession, event: ReferralAckOverdue, envelope: Envelope
) -> None:
    await InboxRepository(session).add(
        [
            _row(
                envelope,
                kind=ACK_OVERDUE,
                audience="mash_manager",
                referral_id=event.referral_id,
                reference=event.reference,
                title=f"Escalation: referral {event.reference} not acknowledged in time",
                body=(
                    f"The referral from {event.referrer_organisation_code} was due to be "
                    f"acknowledged by {_local(event.acknowledgement_due_at)} and has not been. "
                    "The referrer is waiting to hear that their concern was received."
                ),
            ),
            _referrer_may_chase(envelope, event, "acknowledgement", event.acknowledgement_due_at),
        ]
    )
