"""Which events the timeline projects: every referral and its lifecycle, every contact, links,
merges and unmerges, households, consent withdrawals and retention."""

from __future__ import annotations

from services.consent.events import ConsentWithdrawn, RetentionExpired
from services.linking.events import HouseholdUpdated, PersonsMerged, PersonsUnmerged, SubjectLinked
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
    ReferralRated,
    ReferralReceived,
    ReferralReopened,
)
from services.timeline.models import SCHEMA
from services.timeline.projection import Projector
from shared.consumer import HandlerRegistry


def build_registry(schema: str = SCHEMA) -> HandlerRegistry:
    """The handlers for one schema: the live one, or the one a rebuild fills."""
    projector = Projector(schema)
    registry = HandlerRegistry()
    registry.on(ReferralReceived)(projector.referral_received)
    registry.on(ReferralAcknowledged)(projector.referral_acknowledged)
    registry.on(ReferralRated)(projector.referral_rated)
    registry.on(ReferralDecided)(projector.referral_decided)
    registry.on(ReferralFeedbackSent)(projector.feedback_sent)
    registry.on(ReferralAssessmentCompleted)(projector.assessment_completed)
    registry.on(ReferralReopened)(projector.reopened)
    for missed in (
        ReferralAckOverdue,
        ReferralDecisionOverdue,
        ReferralFeedbackOverdue,
        ReferralAssessmentOverdue,
        ReferralPhoneFollowUpDue,
    ):
        registry.on(missed)(projector.deadline_missed)
    for contact in (
        DomesticAbuseIncidentRecorded,
        UnscheduledCareAttendanceRecorded,
        SchoolAttendanceConcernRecorded,
        ChildProtectionPlanChanged,
        LookedAfterStatusChanged,
    ):
        registry.on(contact)(projector.contact)
    registry.on(ConsentWithdrawn)(projector.consent_withdrawn)
    registry.on(RetentionExpired)(projector.retention_expired)
    registry.on(SubjectLinked)(projector.subject_linked)
    registry.on(PersonsMerged)(projector.persons_merged)
    registry.on(PersonsUnmerged)(projector.persons_unmerged)
    registry.on(HouseholdUpdated)(projector.household_updated)
    return registry


registry = build_registry()
