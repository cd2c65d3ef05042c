"""Which events the notifications service handles, and with what."""

from __future__ import annotations

from services.notifications import service
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
from shared.consumer import HandlerRegistry

registry = HandlerRegistry()
registry.on(ReferralReceived)(service.referral_received)
registry.on(ReferralAcknowledged)(service.referral_acknowledged)
registry.on(ReferralAckOverdue)(service.acknowledgement_overdue)
registry.on(ReferralDecided)(service.referral_decided)
registry.on(ReferralFeedbackSent)(service.feedback_sent)
registry.on(ReferralAssessmentCompleted)(service.assessment_completed)
registry.on(ReferralDecisionOverdue)(service.decision_overdue)
registry.on(ReferralFeedbackOverdue)(service.feedback_overdue)
registry.on(ReferralAssessmentOverdue)(service.assessment_overdue)
registry.on(ReferralPhoneFollowUpDue)(service.phone_follow_up_due)
