"""Which events the notifications service handles, and with what (one registry, built with the
service's configuration)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.consent.events import ConsentWithdrawn
from services.linking.events import PersonsMerged, PersonsUnmerged, SubjectLinked
from services.notifications import alerts, service
from services.notifications.alerts import Setup
from services.notifications.repository import AlertRepository, InboxRepository
from services.referrals.contacts.events import (
    ChildProtectionPlanChanged,
    DomesticAbuseIncidentRecorded,
    LookedAfterStatusChanged,
    SchoolAttendanceConcernRecorded,
    UnscheduledCareAttendanceRecorded,
)
from services.referrals.events import (
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
from shared import context
from shared.consumer import BatchHandler, Handler, HandlerRegistry
from shared.events.envelope import Envelope
from shared.timers import DueTimer, TimerHandler

InboxHandler = Callable[[AsyncSession, Any, Envelope], Awaitable[None]]
AlertHandler = Callable[[Setup, AsyncSession, Any, Envelope], Awaitable[None]]


def _both(setup: Setup, inbox: InboxHandler | None, alert: AlertHandler | None) -> Handler:
    """The MASH inbox's handler and the messages' handler, in the one transaction."""

    async def handle(session: AsyncSession, event: Any, envelope: Envelope) -> None:
        if inbox is not None:
            await inbox(session, event, envelope)
        if alert is not None:
            await alert(setup, session, event, envelope)

    return handle


def _batch(handlers: dict[str, Handler]) -> BatchHandler:
    """A fetched batch's new events applied in offset order, with the same effect as their
    handlers one by one, but each run of new referrals (the bulk of the traffic) written as one
    executemany per table instead of three statements per referral. Any other event first
    writes the referrals before it, so that its handler sees them."""

    async def apply(session: AsyncSession, events: list[tuple[Any, Envelope]]) -> None:
        items: list[dict[str, Any]] = []
        facts: list[dict[str, Any]] = []
        subjects: list[dict[str, Any]] = []

        async def write_referrals() -> None:
            await InboxRepository(session).add(items)
            repository = AlertRepository(session)
            await repository.remember_referrals(facts)
            await repository.remember_subjects(subjects)
            items.clear()
            facts.clear()
            subjects.clear()

        for event, envelope in events:
            if isinstance(event, ReferralReceived):
                items.append(service.new_referral_item(event, envelope))
                facts.append(alerts.referral_fact_row(event))
                subjects.extend(alerts.referral_subject_rows(event))
                continue
            await write_referrals()
            with context.bound(envelope.trace()):
                await handlers[envelope.type](session, event, envelope)
        await write_referrals()

    return apply


def build_registry(setup: Setup) -> HandlerRegistry:
    registry = HandlerRegistry()
    handlers: list[tuple[Any, InboxHandler | None, AlertHandler | None]] = [
        (ReferralReceived, service.referral_received, alerts.referral_received),
        (ReferralAcknowledged, service.referral_acknowledged, alerts.referral_acknowledged),
        (ReferralAckOverdue, service.acknowledgement_overdue, alerts.ack_overdue),
        (ReferralDecided, service.referral_decided, alerts.referral_decided),
        (ReferralFeedbackSent, service.feedback_sent, alerts.feedback_sent),
        (ReferralAssessmentCompleted, service.assessment_completed, None),
        (ReferralDecisionOverdue, service.decision_overdue, alerts.overdue_handler("decision")),
        (ReferralFeedbackOverdue, service.feedback_overdue, alerts.overdue_handler("feedback")),
        (
            ReferralAssessmentOverdue,
            service.assessment_overdue,
            alerts.overdue_handler("assessment"),
        ),
        (
            ReferralPhoneFollowUpDue,
            service.phone_follow_up_due,
            alerts.overdue_handler("phone_follow_up"),
        ),
        (DomesticAbuseIncidentRecorded, None, alerts.domestic_abuse_incident),
        (UnscheduledCareAttendanceRecorded, None, alerts.unscheduled_care),
        (SchoolAttendanceConcernRecorded, None, alerts.attendance_concern),
        (ChildProtectionPlanChanged, None, alerts.protection_status),
        (LookedAfterStatusChanged, None, alerts.protection_status),
        (SubjectLinked, None, alerts.subject_linked),
        (PersonsMerged, None, alerts.persons_merged),
        (PersonsUnmerged, None, alerts.persons_unmerged),
        (ConsentWithdrawn, None, alerts.consent_withdrawn),
    ]
    for event_class, inbox, alert in handlers:
        registry.on(event_class)(_both(setup, inbox, alert))
    registry.batch = _batch(registry.handlers)
    return registry


def timer_handlers(setup: Setup) -> dict[str, TimerHandler]:
    def bound(
        handler: Callable[[Setup, AsyncSession, DueTimer, Any], Awaitable[None]],
    ) -> TimerHandler:
        async def fire(session: AsyncSession, timer: DueTimer, now: Any) -> None:
            await handler(setup, session, timer, now)

        return fire

    return {
        alerts.LINK_WAIT_TIMER: bound(alerts.link_wait_over),
        alerts.REGISTRATION_TIMER: bound(alerts.registration_passed),
    }
