from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel


class Audience(StrEnum):
    MASH_WORKER = "mash_worker"
    MASH_MANAGER = "mash_manager"
    REFERRER = "referrer"


class ItemStatus(StrEnum):
    OPEN = "open"
    DONE = "done"


class InboxItemOut(BaseModel):
    id: UUID
    kind: str
    audience: Audience
    organisation_code: str | None
    referral_id: UUID
    referral_reference: str
    title: str
    body: str
    due_at: datetime | None
    status: ItemStatus
    created_at: datetime
    resolved_at: datetime | None


class InboxPage(BaseModel):
    items: list[InboxItemOut]
    total: int
