"""The MASH inbox API."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from services.notifications.repository import InboxRepository
from services.notifications.schemas import Audience, InboxItemOut, InboxPage, ItemStatus
from shared.auth import Principal, require_scope
from shared.service import SessionDep

router = APIRouter(prefix="/v1", tags=["inbox"])


@router.get("/inbox", response_model=InboxPage, summary="The MASH inbox, soonest deadline first")
async def list_inbox(
    _: Annotated[Principal, Depends(require_scope("mash:triage"))],
    session: SessionDep,
    audience: Audience | None = None,
    status: ItemStatus | None = None,
    referral_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> InboxPage:
    items, total = await InboxRepository(session).list(
        audience=audience.value if audience else None,
        status=status.value if status else None,
        referral_id=referral_id,
        limit=limit,
        offset=offset,
    )
    return InboxPage(
        items=[InboxItemOut.model_validate(item, from_attributes=True) for item in items],
        total=total,
    )
