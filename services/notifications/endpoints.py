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


@router.get(
    "/inbox",
    response_model=InboxPage,
    summary="The MASH inbox (or, for a referrer, its own items), soonest deadline first",
)
async def list_inbox(
    reader: Annotated[Principal, Depends(require_scope("mash:triage", "referrals:read"))],
    session: SessionDep,
    audience: Audience | None = None,
    status: ItemStatus | None = None,
    referral_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> InboxPage:
    organisation = None
    if not reader.has("mash:triage"):
        # A referrer sees only the items addressed to its own organisation.
        audience, organisation = Audience.REFERRER, reader.organisation_code
    items, total = await InboxRepository(session).list(
        organisation_code=organisation,
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
