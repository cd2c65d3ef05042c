"""Every query of contacts."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from services.referrals.contacts.models import Contact, ContactSubject, ContactText

_FULL = (selectinload(Contact.subjects), selectinload(Contact.texts))


class ContactRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, contact: Contact, subjects: list[ContactSubject]) -> None:
        self.session.add(contact)
        await self.session.flush()
        self.session.add_all(subjects)
        await self.session.flush()

    async def add_texts(self, texts: list[ContactText]) -> None:
        self.session.add_all(texts)
        await self.session.flush()

    async def get(self, contact_id: uuid.UUID) -> Contact | None:
        result = await self.session.execute(
            select(Contact).where(Contact.id == contact_id).options(*_FULL)
        )
        return result.scalar_one_or_none()

    async def by_idempotency_key(self, organisation_code: str, key: str) -> Contact | None:
        result = await self.session.execute(
            select(Contact)
            .where(Contact.organisation_code == organisation_code)
            .where(Contact.idempotency_key == key)
            .options(*_FULL)
        )
        return result.scalar_one_or_none()
