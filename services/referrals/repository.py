"""Every query of the referrals service."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from services.referrals.models import (
    FamilyMember,
    FamilyRelationship,
    Referral,
    ReferralChild,
    ReferralText,
    referral_number,
)

_FULL = (
    selectinload(Referral.children),
    selectinload(Referral.family_members).selectinload(FamilyMember.relationships),
    selectinload(Referral.texts),
    selectinload(Referral.deadlines),
    selectinload(Referral.actions),
)


class ReferralRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def next_number(self) -> int:
        return int(await self.session.scalar(referral_number.next_value()))

    async def add(
        self,
        referral: Referral,
        children: list[ReferralChild],
        members: list[FamilyMember],
        relations: list[FamilyRelationship],
    ) -> None:
        self.session.add(referral)
        await self.session.flush()
        self.session.add_all([*children, *members])
        await self.session.flush()
        self.session.add_all(relations)
        await self.session.flush()

    async def add_texts(self, texts: list[ReferralText]) -> None:
        self.session.add_all(texts)
        await self.session.flush()

    async def get(
        self, referral_id: uuid.UUID, *, for_update: bool = False, skip_locked: bool = False
    ) -> Referral | None:
        """The referral with everything on it; ``skip_locked``: None while another transaction
        holds it (with ``for_update``)."""
        statement = select(Referral).where(Referral.id == referral_id).options(*_FULL)
        if for_update:
            statement = statement.with_for_update(of=Referral, skip_locked=skip_locked)
        result = await self.session.execute(statement)
        return result.scalar_one_or_none()

    async def exists(self, referral_id: uuid.UUID) -> bool:
        result = await self.session.execute(select(Referral.id).where(Referral.id == referral_id))
        return result.scalar_one_or_none() is not None

    async def by_idempotency_key(self, organisation_code: str, key: str) -> Referral | None:
        result = await self.session.execute(
            select(Referral)
            .where(Referral.referrer_organisation_code == organisation_code)
            .where(Referral.idempotency_key == key)
            .options(*_FULL)
        )
        return result.scalar_one_or_none()

    async def page(
        self,
        *,
        organisation_code: str | None,
        status: str | None,
        received_since: datetime | None,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Referral]:
        """Newest first, keyset-paginated on (received_at, id)."""
        statement = select(Referral).options(
            selectinload(Referral.children), selectinload(Referral.deadlines)
        )
        if organisation_code is not None:
            statement = statement.where(Referral.referrer_organisation_code == organisation_code)
        if status is not None:
            statement = statement.where(Referral.status == status)
        if received_since is not None:
            statement = statement.where(Referral.received_at >= received_since)
        if before is not None:
            received_at, referral_id = before
            statement = statement.where(
                (Referral.received_at < received_at)
                | ((Referral.received_at == received_at) & (Referral.id < referral_id))
            )
        statement = statement.order_by(Referral.received_at.desc(), Referral.id.desc()).limit(limit)
        return list((await self.session.execute(statement)).scalars())
