"""Every query of the notifications service."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.models import InboxItem


class InboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, item: InboxItem) -> None:
        # Flushed with the rest of the transaction (the items of a batch of events in one INSERT);
        # autoflush writes it first if a later statement of the transaction reads inbox items.
        self.session.add(item)

    async def resolve(self, referral_id: uuid.UUID, kind: str, now: datetime) -> int:
        result = await self.session.execute(
            update(InboxItem)
            .where(InboxItem.referral_id == referral_id)
            .where(InboxItem.kind == kind)
            .where(InboxItem.status == "open")
            .values(status="done", resolved_at=now)
            .returning(InboxItem.id)
        )
        return len(result.all())

    async def list(
        self,
        *,
        organisation_code: str | None = None,
        audience: str | None,
        status: str | None,
        referral_id: uuid.UUID | None,
        limit: int,
        offset: int,
    ) -> tuple[list[InboxItem], int]:
        conditions = []
        if organisation_code is not None:
            conditions.append(InboxItem.organisation_code == organisation_code)
        if audience is not None:
            conditions.append(InboxItem.audience == audience)
        if status is not None:
            conditions.append(InboxItem.status == status)
        if referral_id is not None:
            conditions.append(InboxItem.referral_id == referral_id)
        total = await self.session.scalar(
            select(func.count()).select_from(InboxItem).where(*conditions)
        )
        result = await self.session.execute(
            select(InboxItem)
            .where(*conditions)
            .order_by(InboxItem.due_at.asc().nulls_last(), InboxItem.created_at)
            .limit(limit)
            .offset(offset)
        )
        return list(result.scalars()), int(total or 0)
