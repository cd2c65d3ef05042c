"""Which events the consent service handles: a referral's consent information becomes consent
records (idempotent: the consumer runner's inbox applies each event once)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.consent.agreements import ConsentScope
from services.consent.service import RecordReferral
from services.consent.writer import run_batch
from services.referrals.events import ReferralReceived
from shared.consumer import HandlerRegistry
from shared.events.envelope import Envelope


def build_registry(scope: ConsentScope) -> HandlerRegistry:
    registry = HandlerRegistry()

    async def referral_received(
        session: AsyncSession, event: ReferralReceived, envelope: Envelope
    ) -> None:
        # recorded now (the ledger says when it learnt of the consent; the record says when it
        # was obtained: the referral's time)
        await run_batch(session, [RecordReferral(event, scope)], datetime.now(UTC))

    registry.on(ReferralReceived)(referral_received)
    return registry
