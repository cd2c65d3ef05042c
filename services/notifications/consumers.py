"""Which events the notifications service handles, and with what."""

from __future__ import annotations

from services.notifications import service
from services.referrals.events import ReferralAcknowledged, ReferralAckOverdue, ReferralReceived
from shared.consumer import HandlerRegistry

registry = HandlerRegistry()
registry.on(ReferralReceived)(service.referral_received)
registry.on(ReferralAcknowledged)(service.referral_acknowledged)
registry.on(ReferralAckOverdue)(service.acknowledgement_overdue)
