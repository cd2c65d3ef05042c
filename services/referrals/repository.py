"""Every query of the referrals service."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from services.referrals.models import Referral, ReferralChild, referral_number


class ReferralRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def next_number(self) -> int:
        return int(await self.session.scalar(referral_number.next_value()))

    async def add(self, referral: Referral, children: list[ReferralChild]) -> None:
        self.session.add(referral)
        await self.session.flush()
        self.session.add_all(children)
        await self.session.flush()

    async def get(self, referral_id: uuid.UUID, *, for_update: bool = False) -> Referral | None:
        statement = (
            select(Referral)
            .where(Referral.id == referral_id)
            .options(selectinload(Referral.children))
        )
        if for_update:
            statement = statement.with_for_update(of=Referral)
        result = await self.session.execute(statement)
        return result.scalar_one_or_none()

    async def by_idempotency_key(self, organisation_code: str, key: str) -> Referral | None:
        result = await self.session.execute(
            select(Referral)
            .where(Referral.referrer_organisation_code == organisation_code)
            .where(Referral.idempotency_key == key)
            .options(selectinload(Referral.children))
        )
        return result.scalar_one_or_none()
