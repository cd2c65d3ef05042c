"""Which events the referrals service handles. Its own inputs arrive over HTTP; it listens to
the consent service for one thing: a subject's narratives passing their retention period."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.consent.events import RetentionExpired
from services.referrals import service
from shared.consumer import HandlerRegistry
from shared.crypto import Vault
from shared.events.envelope import Envelope


def registry_for(vault: Vault) -> HandlerRegistry:
    """The handlers, bound to the process's vault (the keys they destroy)."""
    registry = HandlerRegistry()

    async def narratives_expired(
        session: AsyncSession, event: RetentionExpired, envelope: Envelope
    ) -> None:
        await service.narratives_expired(session, vault, event)

    registry.on(RetentionExpired)(narratives_expired)
    return registry
